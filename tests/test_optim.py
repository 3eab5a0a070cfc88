"""accel.optim and accel.torch_compile on a CPU: they reach TrainingArguments (SFT and GRPO), a compiled LoRA run trains,
and what this machine cannot run is refused before the run starts.

The compiled run uses backend 'aot_eager' (no generated code): inductor's C++ build of the tiny model took 2.6 min for a
5-step run on 2 cores with a cold cache (31 s warm), too slow for CI. Inductor itself runs in the GPU bench."""
import importlib.util
import pytest, torch
from transformers import Trainer

import ftnb
from ftnb import accel
from ftnb.config import ConfigError, RunConfig
from ftnb.events import read_jsonl


def cfg_for(tmp_path, name, **acc):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 64, 'eval_fraction': 0},
        'adapter': {'method': 'lora', 'r': 8, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'max_steps': 6, 'batch_size': 8, 'logging_steps': 1,
                  'lr': 1e-2, 'save_steps': 100, 'seed': 0}, 'accel': acc})


def test_optim_and_compile_reach_training_args(tmp_path):
    from ftnb.grpo import grpo_args
    from ftnb.sft import training_args
    c = cfg_for(tmp_path, 'a', optim='adamw_torch', torch_compile=True, compile_backend='aot_eager', compile_mode='max-autotune')
    for args in (training_args(c), grpo_args(c.model_copy(update={'method': c.method.model_copy(update={'name': 'grpo'})}))):
        assert (args.optim, args.torch_compile, args.torch_compile_backend, args.torch_compile_mode) == ('adamw_torch', True, 'aot_eager', 'max-autotune')
    cls, kw = Trainer.get_optimizer_cls_and_kwargs(training_args(c))
    assert cls is torch.optim.AdamW and not kw.get('fused')
    plain = training_args(cfg_for(tmp_path, 'b'))
    assert (plain.optim, plain.torch_compile, plain.torch_compile_backend) == ('adamw_torch_fused', False, None)
    assert Trainer.get_optimizer_cls_and_kwargs(plain)[1]['fused'] is True


def test_compiled_lora_run_trains_on_cpu(tmp_path):
    "torch.compile (aot_eager) with fused AdamW on a CPU: the trainer's model is compiled, the optimizer fused, the loss falls."
    res = ftnb.train(cfg_for(tmp_path, 'compiled', torch_compile=True, compile_backend='aot_eager'))
    t = res.trainer
    assert isinstance(t.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert t.accelerator.state.dynamo_plugin.backend.value.lower() == 'aot_eager'
    opt = getattr(t.optimizer, 'optimizer', t.optimizer)
    assert type(opt) is torch.optim.AdamW and opt.defaults['fused'] is True
    l = [r['loss'] for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'loss' in r]
    assert len(l) == 6 and l[-1] < l[0] - 0.4, l  # from about 6.4: a clear fall, well above step-to-step noise


def test_bitsandbytes_optimizers_refused_where_they_cannot_run(monkeypatch, tmp_path):
    cfg = cfg_for(tmp_path, 'bnb', optim='paged_adamw_8bit')
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'bitsandbytes' else find(name, *a))
    with pytest.raises(ConfigError, match=r"accel.optim='paged_adamw_8bit': needs the optional library bitsandbytes.*Fix: pip install \"ftnb\[quant\]\", or use accel.optim='adamw_torch_fused'"):
        ftnb.train(cfg)
    monkeypatch.setattr(accel, 'require', lambda *a, **k: None)  # as if installed
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    with pytest.raises(ConfigError, match=r"accel.optim='paged_adamw_8bit': ftnb runs bitsandbytes' 8-bit optimizers on a CUDA GPU .* none was found"):
        ftnb.train(cfg)
    assert not cfg.run_dir.exists()  # refused before anything was written
    monkeypatch.setattr(accel, '_gpu', lambda: ('NVIDIA H200', (9, 0)))
    accel.check(cfg)


def test_inductor_on_a_cpu_needs_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    monkeypatch.setenv('CXX', 'no-such-compiler++')
    with pytest.raises(ConfigError, match=r"accel.compile_backend='inductor': inductor builds C\+\+ kernels on a CPU, and its compiler no-such-compiler\+\+ was not found"):
        accel.check(cfg_for(tmp_path, 'ind', torch_compile=True))
    accel.check(cfg_for(tmp_path, 'ae', torch_compile=True, compile_backend='aot_eager'))  # no generated code: no compiler
    accel.check(cfg_for(tmp_path, 'off', compile_backend='inductor'))                    # not compiling: nothing to build
