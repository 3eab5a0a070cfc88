"""Checks for claims in the docs that no other test checked (docs/claims.md names each one's row)."""
import json, os, subprocess, sys, threading, warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import ftnb
from ftnb.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'PYTHONPATH': str(ROOT)}

# ------------------------------------------------------------------------------------------------ 05_accel
def test_base_linears_leave_modules_to_save_out():
    "K4: QAT/FP8 never swap the copies PEFT keeps for `modules_to_save` (nor the originals they wrap)."
    from peft import LoraConfig, get_peft_model
    from ftnb.accel import base_linears
    from ftnb.testing import tiny_model
    m = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=['q_proj'], modules_to_save=['down_proj']))
    names = base_linears(m)
    assert len(names) == 21 - 3                                    # 3 layers' down_proj left out
    assert not [n for n in names if 'down_proj' in n or 'modules_to_save' in n or 'original_module' in n]

def test_fp8_leaves_layers_whose_sizes_are_not_multiples_of_16():
    "K9: FP8 swaps only layers with both sizes multiples of 16."
    from ftnb.accel import fp8_linears
    m = nn.Sequential(nn.Linear(96, 96), nn.Linear(96, 100), nn.Linear(40, 96))
    assert list(fp8_linears(m)) == ['0']

def test_qat_merge_then_quantize_is_not_the_trained_model():
    "K7: the quantized base + the adapter gives the trained QAT model; merging first and then quantizing does not."
    from peft import LoraConfig, PeftModel, get_peft_model
    from torchao.quantization import quantize_
    from ftnb.accel import base_linears, prepare_qat, qat_base_config, save_quantized
    from ftnb.config import AccelCfg
    from ftnb.testing import tiny_model
    import copy, tempfile
    cfg = RunConfig(accel=AccelCfg(qat=True))
    pm = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'up_proj'], init_lora_weights=False))
    plain = copy.deepcopy(pm)                          # the same weights and adapter, never fake-quantized
    prepare_qat(pm, cfg)
    x = torch.randint(4, 500, (2, 12))
    with torch.no_grad(): trained = pm(x).logits
    with tempfile.TemporaryDirectory() as d:
        pm.save_pretrained(d); save_quantized(pm, cfg, f'{d}/q')
        from transformers import AutoModelForCausalLM
        ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(f'{d}/q'), d)
        with torch.no_grad(): ours_gap = (ours(x).logits - trained).abs().max().item()
    merged = plain.merge_and_unload()
    keep = base_linears(merged)
    quantize_(merged, qat_base_config(cfg), filter_fn=lambda m, fqn: fqn in keep)
    with torch.no_grad(): merged_gap = (merged(x).logits - trained).abs().max().item()
    assert ours_gap < 1e-4 and merged_gap > 100 * max(ours_gap, 1e-6), (ours_gap, merged_gap)

# ------------------------------------------------------------------------------------------------ 06b_runs
def test_result_json_is_never_read_half_written(tmp_path):
    "J6: a reader polling result.json while it is rewritten always parses a whole file."
    from ftnb.runs import read_result, write_json
    p, stop, bad = tmp_path/'result.json', threading.Event(), []
    big = {'status': 'running', 'pad': 'x' * 2_000_000}
    write_json(p, big)
    def reader():
        while not stop.is_set():
            try: json.loads(p.read_text())
            except ValueError: bad.append(1)
    t = threading.Thread(target=reader); t.start()
    for i in range(40): write_json(p, {**big, 'step': i})
    stop.set(); t.join()
    assert not bad and read_result(tmp_path)['step'] == 39

def _run_cfg(tmp_path, name, **train):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'eval_path': 'toy:addition_test', 'max_length': 32, 'max_samples': 64},
        'adapter': {'method': 'full'},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'batch_size': 16, 'lr': 2e-3, 'logging_steps': 1,
                  'max_steps': -1, 'epochs': 2, 'save_steps': 2, 'seed': 0, **train}})

@pytest.mark.trains
def test_stop_would_evaluate_at_the_stop_step_without_health(tmp_path, monkeypatch):
    "J16: the 'measured' behaviour Health guards against: without its on_epoch_end, a stop evaluates at the stop step."
    from transformers import TrainerCallback
    from ftnb import runs
    from ftnb.events import read_jsonl
    class StopAt(TrainerCallback):
        def __init__(self, flag): self.flag = flag
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3: self.flag.set()
    monkeypatch.setattr(runs.Health, 'on_epoch_end', lambda self, *a, **k: None)
    flag = threading.Event()
    res = ftnb.train(_run_cfg(tmp_path, 'noguard'), stop=flag, callbacks=[StopAt(flag)])
    assert res.status == 'stopped' and res.step == 3
    evals = [r['step'] for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'eval_loss' in r]
    assert evals == [3], evals  # tests/test_runs.py::test_stop_and_resume_add_no_evaluation: with Health, none

# ------------------------------------------------------------------------------------------------ 10c_exporting
def test_importing_exporting_keeps_ftnb_export_a_function():
    "F1: `import ftnb.exporting` does not replace the function `ftnb.export` by a module."
    code = 'import ftnb, ftnb.exporting, types; assert callable(ftnb.export) and not isinstance(ftnb.export, types.ModuleType); print(ftnb.export is ftnb.exporting.export)'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'True', r.stderr[-2000:]

def test_added_tokens_have_one_field():
    "F6 (rewritten): model.add_tokens is the one setting that adds tokens; export moves their rows (tests/test_export.py)."
    from ftnb.widgets import field_paths
    assert [f for f in field_paths() if 'token' in f.split('.')[-1] and ('add' in f or 'new' in f or 'special' in f)] == ['model.add_tokens']

# ------------------------------------------------------------------------------------------------ tutorials/alora
def test_alora_acts_from_the_last_invocation_only():
    "IA5/IA6: PEFT applies an aLoRA from the last occurrence of its invocation tokens; a plain LoRA changes every position."
    from ftnb.adapters import apply
    from ftnb.testing import tiny_model, tiny_tokenizer
    tok = tiny_tokenizer()
    inv = '<|im_start|>assistant'
    def model(method):
        m = apply(tiny_model(), RunConfig(adapter=dict(method=method, r=4, **({'alora_invocation': inv} if method == 'alora' else {}))), tok).eval()
        with torch.no_grad():
            for n, p in m.named_parameters():
                if 'lora_B' in n: p.normal_(0, 0.5)
        return m
    a = tok('hello there', add_special_tokens=False).input_ids
    i = tok(inv, add_special_tokens=False).input_ids
    ids = torch.tensor([a + i + a + i + a])
    second = len(a) * 2 + len(i)                       # where the second (last) invocation starts
    for method in ('alora', 'lora'):
        m = model(method)
        with torch.no_grad():
            with m.disable_adapter(): base = m(input_ids=ids).logits[0]
            gap = (m(input_ids=ids).logits[0] - base).abs().amax(-1)
        if method == 'alora': assert gap[:second].max() == 0 and (gap[second:] > 0).all()
        else: assert (gap > 0).all()

# ------------------------------------------------------------------------------------------------ tutorials/qlora_16gb
def test_default_optimizer_is_adamw_torch_fused_and_8bit_is_a_setting():
    "IQ4: the tutorial keeps ftnb's default optimizer, transformers' fused AdamW; accel.optim offers bitsandbytes' paged 8-bit AdamW."
    from typing import get_args
    from transformers import TrainingArguments
    from ftnb.config import AccelCfg
    from ftnb.runs import trainer_kwargs
    from ftnb.widgets import field_paths
    assert 'accel.optim' in field_paths() and 'paged_adamw_8bit' in get_args(AccelCfg.model_fields['optim'].annotation)
    args = TrainingArguments(**{**trainer_kwargs(RunConfig()), 'output_dir': '/tmp/ftnb-claims-args'})
    assert args.optim == 'adamw_torch_fused', args.optim

def test_no_measured_qlora_result_yet():
    "IQ2 / IQ10: the docs say no QLoRA memory timeline exists: true while no such JSON is kept (the SFT bench has its rows: B16)."
    res = [p.name for p in (ROOT/'bench'/'results').glob('*.json')]
    assert not [n for n in res if 'qlora' in n], res

# ------------------------------------------------------------------------------------------------ 02_data / 00_config
@pytest.mark.trains
def test_chat_template_is_saved_with_the_model(tmp_path):
    "D20: the run's final/ tokenizer carries data.chat_template, so the saved model renders chats as it was trained."
    from transformers import AutoTokenizer
    tmpl = ("{% for m in messages %}{{ '<' + m['role'] + '> ' }}{% if m['role'] == 'assistant' %}{% generation %}"
            "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{{ '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}")
    cfg = RunConfig.model_validate({'data': {'path': 'toy:chat', 'max_length': 128, 'chat_template': tmpl},
        'train': {'output_dir': str(tmp_path), 'run_name': 'tmpl', 'max_steps': 1, 'batch_size': 4, 'save_steps': 100}})
    res = ftnb.train(cfg)
    saved = AutoTokenizer.from_pretrained(res.run_dir/'final')
    assert saved.chat_template == tmpl
    assert saved.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True) == '<user> hi\n<assistant> '

# ------------------------------------------------------------------------------------------------ 10_grpo
def test_trl_grpo_has_no_max_prompt_length():
    "P13: 'TRL 1.16 has no max_prompt_length any more', which is why ftnb fits the prompts itself."
    import dataclasses, trl
    from trl import GRPOConfig
    assert 'max_prompt_length' not in {f.name for f in dataclasses.fields(GRPOConfig)}, trl.__version__

# ------------------------------------------------------------------------------------------------ 10b_entry
def test_panel_trains_through_ftnb_train_by_default(monkeypatch):
    "Y3: the panel's run control, given no train_fn, calls ftnb.train (ftnb.entry), the one entry point."
    import ftnb.entry
    from ftnb.widgets import RunControl
    seen = []
    monkeypatch.setattr(ftnb.entry, 'train', lambda cfg, **kw: seen.append(cfg) or 'done')
    cfg = RunConfig()
    rc = RunControl(lambda: cfg)
    rc.done, rc.queue, rc.stop_event = threading.Event(), None, threading.Event()  # as start() sets them
    rc._train(cfg)
    assert seen == [cfg] and rc.result == 'done' and rc.error is None

# ------------------------------------------------------------------------------------------------ tutorials: toy sets
def test_toy_set_sizes_the_tutorials_quote():
    "IC3, IL2, IG10: toy:text holds 800 stories, toy:chat 400 conversations, toy:addition 2,000 sums, toy:addition_test 200."
    from ftnb.testing import toy_rows
    assert {n: len(toy_rows(n)) for n in ('text', 'chat', 'addition', 'addition_test')} == {'text': 800, 'chat': 400, 'addition': 2000, 'addition_test': 200}
