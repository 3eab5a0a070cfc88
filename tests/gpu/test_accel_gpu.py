"""FP8 training through torchao (accel.fp8) on an FP8 GPU (compute capability 8.9+: H100, H200, L4): the linear layers
become Float8Linear (every one for full fine-tuning, the frozen base layers for LoRA) and the loss falls.
Not run in CI (no GPU there). Run on an H200 on 2026-12-03 (bench/results/gpu_tests_issue12_h200.log).
Run on the GPU machine:
    PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_accel_gpu.py -rP"""
import sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability(0) < (8, 9),
                                                  reason='needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+)')]


@pytest.mark.parametrize('method', ['full', 'lora'])
def test_fp8_swaps_layers_and_the_loss_falls(tmp_path, method):
    pytest.importorskip('torchao')
    from torchao.float8.float8_linear import Float8Linear
    import ftnb
    from ftnb.config import RunConfig
    from ftnb.events import read_jsonl
    cfg = lambda fp8: RunConfig.model_validate({'model': {'dtype': 'bfloat16'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 400, 'eval_fraction': 0},
        'adapter': {'method': method, 'r': 16, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': f'{method}-fp8' if fp8 else f'{method}-bf16', 'max_steps': 30, 'batch_size': 16,
                  'logging_steps': 1, 'lr': 5e-3 if method == 'lora' else 1e-3, 'save_steps': 1000, 'seed': 0},
        'accel': {'fp8': fp8}})
    curve = lambda res: [r['loss'] for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'loss' in r]
    drop = lambda l: sum(l[:3]) / 3 - sum(l[-5:]) / 5  # first-3 mean minus last-5 mean
    ref = curve(ftnb.train(cfg(False)))  # the same run in bf16: how far this model and data let the loss fall in 30 steps
    res = ftnb.train(cfg(True))
    base = res.model.get_base_model() if method == 'lora' else res.model
    swapped = [n for n, m in base.named_modules() if isinstance(m, Float8Linear)]
    assert len(swapped) == 21, swapped  # q, k, v, o, gate, up, down in 3 layers; lm_head stays
    if method == 'lora':
        q = base.model.layers[0].self_attn.q_proj
        assert isinstance(q.base_layer, Float8Linear) and not isinstance(q.lora_A['default'], Float8Linear)
    loss = curve(res)
    print('FP8', method, [round(l, 3) for l in loss])
    print('BF16-REF', method, [round(l, 3) for l in ref])
    # FP8 must learn about as much as bf16 does. Measured on an H200 (2026-12-03): LoRA on this 3-layer random model
    # plateaus near 5.4 from 6.3 in bf16 as in FP8 (drops 0.581 and 0.590, about 10%; per-step losses within 0.01), so the
    # earlier fixed 20% drop failed for LoRA whatever FP8 does; full fine-tuning fell 6.33 -> 3.6. A dead FP8 path drops ~0.
    assert drop(ref) > 0 and drop(loss) >= 0.5 * drop(ref), (drop(loss), drop(ref), loss, ref)
