"""FP8 training through torchao (accel.fp8) on an FP8 GPU (compute capability 8.9+: H100, H200, L4): the linear layers
become Float8Linear (every one for full fine-tuning, the frozen base layers for LoRA) and the loss falls.
Not run in CI (no GPU there), and not yet run on the GPU machine: written 2026-12-03 without GPU time left.
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
    cfg = RunConfig.model_validate({'model': {'dtype': 'bfloat16'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 400, 'eval_fraction': 0},
        'adapter': {'method': method, 'r': 16, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': method, 'max_steps': 30, 'batch_size': 16, 'logging_steps': 1,
                  'lr': 5e-3 if method == 'lora' else 1e-3, 'save_steps': 1000, 'seed': 0},
        'accel': {'fp8': True}})
    res = ftnb.train(cfg)
    base = res.model.get_base_model() if method == 'lora' else res.model
    swapped = [n for n, m in base.named_modules() if isinstance(m, Float8Linear)]
    assert len(swapped) == 21, swapped  # q, k, v, o, gate, up, down in 3 layers; lm_head stays
    if method == 'lora':
        q = base.model.layers[0].self_attn.q_proj
        assert isinstance(q.base_layer, Float8Linear) and not isinstance(q.lora_A['default'], Float8Linear)
    loss = [r['loss'] for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'loss' in r]
    print('FP8', method, [round(l, 3) for l in loss])
    assert sum(loss[-5:]) / 5 < 0.8 * sum(loss[:3]) / 3, loss
