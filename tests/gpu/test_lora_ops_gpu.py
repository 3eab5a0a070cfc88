"""ftnb.lora_ops on a CUDA GPU: the SwiGLU Triton kernels against the torch reference in bf16 (and that CUDA tensors do
go to Triton); the patched tiny model under bf16 autocast as close to the fp32 result as PEFT's own bf16 path is; and
20 steps of `ftnb.train` with `accel.fused_lora` (LoRA; LoRA with `accel.liger` when liger-kernel is installed; QLoRA
when bitsandbytes is): the loss falls and its first value equals the unfused run's within bf16's rounding.
Run on the GPU machine: PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_lora_ops_gpu.py -rP"""
import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT/'tests')]
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]


def test_swiglu_triton_bf16_on_cuda():
    from ftnb import lora_ops as L
    pytest.importorskip('triton')
    g = torch.Generator(device='cuda').manual_seed(0)
    e, gg, dh = (torch.randn(8192 + 3, 8960 + 1, device='cuda', dtype=torch.bfloat16, generator=g) for _ in range(3))  # odd sizes
    assert L._triton_on(e)  # CUDA tensors take the Triton kernels
    torch.testing.assert_close(L.swiglu(e, gg), L.swiglu_ref(e, gg), rtol=1e-2, atol=1e-2)  # bf16: one rounding step
    for a, b in zip(L.swiglu_bwd(dh, e, gg), L.swiglu_bwd_ref(dh, e, gg)): torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    assert not torch.allclose(L.swiglu(e, gg * 1.05).float(), L.swiglu_ref(e, gg).float(), rtol=1e-2, atol=1e-2)  # can fail


def test_patched_model_bf16_autocast_on_cuda():
    "Loss and LoRA gradients of the fused model under bf16 autocast: within bf16 of fp32, no further than PEFT's bf16 path."
    from ftnb import lora_ops as L
    from test_lora_ops import peft_tiny, loss_grads, rel
    ref, fz = peft_tiny().cuda(), peft_tiny().cuda()
    assert L.apply_fused_lora(fz) == 3 * fz.config.num_hidden_layers
    ids = torch.randint(0, ref.config.vocab_size, (8, 257), generator=torch.Generator().manual_seed(1)).cuda()
    l32, g32 = loss_grads(ref, ids)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        (l0, g0), (l1, g1) = loss_grads(ref, ids), loss_grads(fz, ids)
    err_peft, err_fused = (max(rel(g[k], g32[k]) for k in g32) for g in (g0, g1))
    print(f'loss fp32 {l32:.5f} peft bf16 {l0:.5f} fused bf16 {l1:.5f}; max grad rel err peft {err_peft:.4f} fused {err_fused:.4f}')
    assert abs(l1 - l32) < 2e-2 * abs(l32) and err_fused < 1.5 * err_peft + 1e-3


def _cfg(tmp_path, name, method='lora', **accel):
    from ftnb.config import RunConfig
    return RunConfig.model_validate({'model': {'dtype': 'bfloat16'},
        'data': {'path': 'toy:addition', 'max_length': 64, 'max_samples': 320, 'eval_fraction': 0},
        'adapter': {'method': method, 'r': 8, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'max_steps': 20, 'batch_size': 16, 'logging_steps': 1, 'lr': 1e-2,
                  'save_steps': 1000, 'seed': 0}, 'accel': accel})

def _losses(res):
    from ftnb.events import read_jsonl
    return [r['loss'] for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'loss' in r]

@pytest.mark.parametrize('method, liger', [('lora', False), ('lora', True), ('qlora', False)], ids=['fused', 'fused+liger', 'qlora'])
def test_train_20_steps_fused_lora(tmp_path, method, liger):
    import ftnb
    from ftnb import lora_ops as L
    if liger: pytest.importorskip('liger_kernel')
    if method == 'qlora': pytest.importorskip('bitsandbytes')
    plain = ftnb.train(_cfg(tmp_path, 'plain', method, liger=liger))
    fused = ftnb.train(_cfg(tmp_path, 'fused', method, liger=liger, fused_lora=True))
    mlps = [m for m in fused.model.modules() if hasattr(m, 'gate_proj')]
    assert mlps and all(m.forward.__func__ is L._mlp_fwd for m in mlps)  # fused_lora owns the MLP (with Liger too)
    if method == 'qlora':  # the 4-bit branch: bitsandbytes' weights, dequantized inside the ops
        assert all(getattr(m.gate_proj.get_base_layer().weight, 'quant_state', None) is not None for m in mlps)
    lp, lf = _losses(plain), _losses(fused)
    print('plain', [round(x, 4) for x in lp]); print('fused', [round(x, 4) for x in lf])
    assert abs(lf[0] - lp[0]) < 1e-2 * lp[0]  # the same weights and batch: equal up to bf16 rounding
    assert sum(lf[-3:]) / 3 < lf[0] - 0.3


def test_liger_has_no_lora_op():
    "The gap ftnb.lora_ops fills: Liger Kernel's ops (liger_kernel.ops, installed on the GPU machine) include no LoRA op."
    import pkgutil
    ops = pytest.importorskip('liger_kernel.ops')
    names = [m.name for m in pkgutil.iter_modules(ops.__path__)]
    print('liger_kernel.ops:', names)
    assert 'swiglu' in names and not [n for n in names if 'lora' in n.lower()]
