"""The `accel` switches on the CPU: QAT really fake-quantizes (layers swapped, loss falls, the delay holds, the converted
model saved in final/quantized/ computes what the fake-quantized one did); FP8 and Liger are refused with the reason on
a machine that cannot run them. FP8 training itself needs an FP8 GPU: tests/gpu/test_accel_gpu.py."""
import pytest, torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, TrainerCallback
pytest.importorskip('torchao')
from torchao.quantization.qat import FakeQuantizedLinear

import ftnb
from ftnb import accel
from ftnb.config import ConfigError, RunConfig
from ftnb.events import read_jsonl


def cfg_for(tmp_path, name, method='lora', **acc):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 96, 'eval_fraction': 0},
        'adapter': {'method': method, 'r': 8, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'max_steps': 10, 'batch_size': 8, 'logging_steps': 1,
                  'lr': 1e-2 if method == 'lora' else 2e-3, 'save_steps': 100, 'seed': 0},
        'accel': {'qat': True, **acc}})


class Probe(TrainerCallback):
    "Records, for each optimizer step, whether one fake-quantized layer computed anything other than its plain linear."
    def __init__(self): self.step, self.quantized = 0, {}
    def on_train_begin(self, args, state, control, model=None, **kw):
        layer = next(m for m in model.modules() if isinstance(m, FakeQuantizedLinear))
        def hook(mod, inp, out):
            if mod.training: self.quantized.setdefault(self.step, not torch.allclose(out, F.linear(inp[0], mod.weight, mod.bias)))
        layer.register_forward_hook(hook)
    def on_step_begin(self, args, state, control, **kw): self.step = state.global_step


def falls(l): return sum(l[-3:]) / 3 < sum(l[:2]) / 2 - 0.4  # from about 6.2: a clear fall, well above step-to-step noise (~0.1)

def losses(run_dir):
    return [r['loss'] for r in read_jsonl(run_dir/'metrics.jsonl') if 'loss' in r]


def test_qat_lora_swaps_trains_and_waits(tmp_path):
    "LoRA + int8 activations / int4 weights, fake quantization from step 3: base layers swapped, adapter not, loss falls."
    probe = Probe()
    res = ftnb.train(cfg_for(tmp_path, 'qat-lora', qat_after_steps=3), callbacks=[probe])
    base = res.model.get_base_model()
    q = base.model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, FakeQuantizedLinear) and type(q.lora_A['default']) is nn.Linear
    assert sum(isinstance(m, FakeQuantizedLinear) for m in base.modules()) == 21 and type(base.lm_head) is nn.Linear
    assert q.base_layer.activation_fake_quantizer.config.dtype == torch.int8 and q.base_layer.weight_fake_quantizer.config.dtype == torch.int4
    assert probe.quantized == {s: s >= 3 for s in range(10)}, probe.quantized  # plain linears for steps 0-2, fake-quantized from 3
    l = losses(res.run_dir)
    assert len(l) == 10 and falls(l), l
    assert (res.run_dir/'final'/'adapter_model.safetensors').exists()  # the adapter is saved as before
    saved = AutoModelForCausalLM.from_pretrained(res.run_dir/'final'/'quantized')  # the quantized base, not merged
    assert type(saved.model.layers[0].self_attn.q_proj.weight.data).__name__ == 'IntxUnpackedToInt8Tensor'
    from peft import PeftModel
    real = PeftModel.from_pretrained(saved, res.run_dir/'final').eval()
    x = torch.randint(4, 500, (2, 16)); res.model.eval()
    with torch.no_grad(): fake, out = res.model(x).logits, real(x).logits
    assert torch.allclose(out, fake, atol=1e-4), (out - fake).abs().max()  # quantized base + adapter = the trained model


def test_qat_full_converted_model_matches_fake_quantized(tmp_path):
    "Full fine-tuning with int8 weight-only QAT: the real int8 model in final/quantized/ computes what the trained fake-quantized one did."
    res = ftnb.train(cfg_for(tmp_path, 'qat-full', method='full', qat_scheme='int8_weight', qat_group_size=16))
    assert sum(isinstance(m, FakeQuantizedLinear) for m in res.model.modules()) == 21
    l = losses(res.run_dir)
    assert falls(l), l
    saved = AutoModelForCausalLM.from_pretrained(res.run_dir/'final'/'quantized')
    w = saved.model.layers[1].mlp.down_proj.weight.data
    assert type(w).__name__ == 'IntxUnpackedToInt8Tensor' and w.qdata.dtype == torch.int8 and list(w.block_size) == [1, 16]
    x = torch.randint(4, 500, (2, 16))
    res.model.eval(); saved.eval()
    with torch.no_grad():
        fake, real = res.model(x).logits, saved(x).logits
        accel.fake_quant([m for m in res.model.modules() if isinstance(m, FakeQuantizedLinear)], False)
        unq = res.model(x).logits
    assert torch.allclose(real, fake, atol=1e-4), (real - fake).abs().max()
    assert (unq - fake).abs().max() > 1e-3  # the fake quantization did change the outputs: the closeness above means something


def test_qat_group_size_must_divide_the_layers(tmp_path):
    with pytest.raises(ConfigError, match=r"accel.qat_group_size=64: it must divide .* takes 96.*Fix: use 32 \(or 16\)"):
        ftnb.train(cfg_for(tmp_path, 'g64', qat_group_size=64))


def test_fp8_refused_without_an_fp8_gpu(monkeypatch, tmp_path):
    cfg = cfg_for(tmp_path, 'fp8', qat=False, fp8=True)
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    with pytest.raises(ConfigError, match=r'accel.fp8=True: FP8 training needs a CUDA GPU .* none was found. Fix: run on a GPU of compute capability 8.9'):
        ftnb.train(cfg)
    assert not cfg.run_dir.exists()  # refused before anything was written
    monkeypatch.setattr(accel, '_gpu', lambda: ('Tesla T4', (7, 5)))
    with pytest.raises(ConfigError, match=r'this GPU is Tesla T4, compute capability 7.5'):
        accel.check(cfg)
    monkeypatch.setattr(accel, '_gpu', lambda: ('NVIDIA H200', (9, 0)))
    accel.check(cfg)


def test_fp8_swaps_the_frozen_base_of_lora():
    "The swap itself runs on a CPU (its matmuls do not): LoRA's base layers become Float8Linear, the adapter and lm_head stay."
    from peft import LoraConfig, get_peft_model
    from torchao.float8.float8_linear import Float8Linear
    from ftnb.testing import tiny_model
    m = get_peft_model(tiny_model(), LoraConfig(r=8, target_modules='all-linear'))
    assert len(accel.to_fp8(m)) == 21
    q = m.get_base_model().model.layers[2].mlp.up_proj
    assert isinstance(q.base_layer, Float8Linear) and type(q.lora_B['default']) is nn.Linear
    assert type(m.get_base_model().lm_head) is nn.Linear


def test_liger_needs_the_library_and_a_gpu(monkeypatch, tmp_path):
    import importlib.util
    cfg = cfg_for(tmp_path, 'liger', qat=False, liger=True)
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'liger_kernel' else find(name, *a))
    with pytest.raises(ConfigError, match=r'accel.liger=True: needs the optional library liger_kernel.*Fix: pip install "ftnb\[kernels\]"'):
        ftnb.train(cfg)
    monkeypatch.setattr(accel, 'require', lambda *a, **k: None)  # as if installed
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    with pytest.raises(ConfigError, match=r"accel.liger=True: Liger's Triton kernels need a CUDA GPU and none was found"):
        ftnb.train(cfg)
    assert not cfg.run_dir.exists()
