"""Bad inputs and the errors they get. Each case is one row of docs/errors.md, and one test here.

`python tests/test_errors.py` rewrites docs/errors.md from the cases; the test checks that the table is current,
so the docs show the messages users really see.
"""
import json, os, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT/'docs'/'errors.md'

from ftnb import config as C
from ftnb.config import FtnbError

def _tok():
    from ftnb.testing import tiny_tokenizer
    return tiny_tokenizer()

def _write(name, text):
    Path(name).write_text(text); return name

def _rows(path, **kw):
    from ftnb.data import load_rows
    return load_rows(C.DataCfg(path=path, **kw))

def _tokenize(path, **kw):
    from ftnb.data import load_rows, tokenize
    cfg = C.DataCfg(path=path, **kw)
    return tokenize(load_rows(cfg), _tok(), cfg)

def _adapter(targets, **adapter):
    from ftnb.adapters import apply
    from ftnb.testing import tiny_model
    return apply(tiny_model('qwen2'), C.RunConfig(adapter=C.AdapterCfg(target_modules=targets, **adapter)))

def _check_head(targets):
    from ftnb.runs import check_head
    return check_head(C.RunConfig(adapter=C.AdapterCfg(target_modules=targets)))

def _cli(*args):
    from ftnb.cli import run
    return run(list(args))

def _resume():
    from ftnb.sft import train
    return train(C.RunConfig(train=C.TrainCfg(output_dir='runs', run_name='never-ran', resume_from='latest')))

def _qlora_cpu():
    from ftnb.models import load_model
    return load_model(C.RunConfig(adapter=C.AdapterCfg(method='qlora')))

def _tiny(name='r', **train):
    return C.RunConfig.model_validate({'model': {'dtype': 'float32'}, 'data': {'max_samples': 16}, 'adapter': {'method': 'lora', 'r': 8},
        'train': {'output_dir': 'runs', 'run_name': name, 'max_steps': 1, 'batch_size': 4, 'save_steps': 1, **train}})

def _train(cfg, accel_=None, **kw):
    import ftnb
    if accel_: cfg = cfg.model_copy(update={'accel': C.AccelCfg(**accel_)}).check()
    return ftnb.train(cfg, **kw)

def _launch(cfg, nproc):
    from ftnb.launch import check_nproc
    return check_nproc(cfg, nproc)

def _second_run(): _train(_tiny()); return _train(_tiny(lr=1e-3))

def _resume_changed_r():
    _train(_tiny()); c = _tiny(resume_from='latest'); c.adapter.r = 16; return _train(c)

def _nan_loss():
    "A NaN put into the weights after the first checkpoint."
    import torch
    from transformers import TrainerCallback
    class Poison(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw): self.model = model
        def on_save(self, args, state, control, **kw):
            with torch.no_grad(): next(p for p in self.model.parameters() if p.requires_grad).fill_(float('nan'))
    return _train(_tiny(max_steps=3), callbacks=[Poison()])

def _rewards_none():
    p = _write('prompts.jsonl', ''.join(json.dumps({'messages': [{'role': 'user', 'content': f'{i}+{i}='}]}) + '\n' for i in range(8)))
    return _train(C.RunConfig.model_validate({'data': {'path': p}, 'method': {'name': 'grpo', 'num_generations': 4,
        'max_completion_length': 4, 'max_model_len': 64, 'rewards': [{'name': 'exact_answer'}]},
        'train': {'output_dir': 'runs', 'max_steps': 2, 'batch_size': 8}}))

def _server_down():
    "GRPO through a vLLM server that is not running (port 1: privileged, nothing listens there; no wait)."
    return _train(C.RunConfig.model_validate({'method': {'name': 'grpo', 'engine': 'server', 'server_url': 'http://127.0.0.1:1', 'server_timeout': 0},
                                              'train': {'output_dir': 'runs', 'max_steps': 1}}))

def _cut_checkpoint():
    os.makedirs('runs/run/checkpoint-3'); return _train(C.RunConfig(train=C.TrainCfg(output_dir='runs', resume_from='latest')))

# (what the user did, the call that does it)
def _fused_on_dora():
    "ftnb.lora_ops.apply_fused_lora on a PEFT model whose layers are DoRA (a model built outside RunConfig's checks)."
    from peft import LoraConfig, get_peft_model
    from ftnb.lora_ops import apply_fused_lora
    from ftnb.testing import tiny_model
    return apply_fused_lora(get_peft_model(tiny_model(), LoraConfig(r=4, lora_dropout=0.0, use_dora=True, target_modules='all-linear')))

CASES = [
    ("aLoRA with no invocation string", lambda: C.RunConfig(adapter=C.AdapterCfg(method='alora'))),
    ("GPTQ-LoRA without fp16", lambda: C.RunConfig(adapter=C.AdapterCfg(method='gptq_lora'))),
    ("FP8 together with 4-bit weights (QLoRA)", lambda: C.RunConfig(adapter=C.AdapterCfg(method='qlora'), accel=C.AccelCfg(fp8=True))),
    ("QAT together with GPTQ weights", lambda: C.RunConfig(model=C.ModelCfg(dtype='float16'), adapter=C.AdapterCfg(method='gptq_lora'), accel=C.AccelCfg(qat=True))),
    ("fused LoRA ops with adapter dropout (the default 0.05)", lambda: C.RunConfig(accel=C.AccelCfg(fused_lora=True))),
    ("fused LoRA ops on a model with DoRA layers", lambda: _fused_on_dora()),
    ("a target module the model does not have", lambda: _adapter(['query', 'value'])),
    ("a LoRA on lm_head (TRL's fused LM head would never train it)", lambda: _check_head(['q_proj', 'lm_head'])),
    ("a misspelt field in a YAML config", lambda: C.load(_write('c.yaml', 'adapter:\n  rank: 8\n'))),
    ("an unknown adapter method", lambda: C.load(_write('c.yaml', 'adapter:\n  method: lorra\n'))),
    ("a YAML config that does not parse", lambda: C.load(_write('c.yaml', 'adapter:\n  r: 8\n   alpha: 16\n'))),
    ("a JSON config that does not parse", lambda: C.load(_write('c.json', '{"train": {"lr": 1e-4,}}'))),
    ("a config file whose top level is a list", lambda: C.load(_write('c.yaml', '- adapter\n- train\n'))),
    ("a negative learning rate", lambda: C.apply_sets(C.RunConfig(), ['train.lr=-1e-4'])),
    ("`--set` without `=`", lambda: C.apply_sets(C.RunConfig(), ['adapter.r'])),
    ("response_template with chat data", lambda: C.RunConfig(data=C.DataCfg(format='messages', response_template='### Answer:'))),
    ("GRPO batch not divisible by num_generations", lambda: C.RunConfig(method=C.MethodCfg(name='grpo', num_generations=3))),
    ("GRPO through a vLLM server that is not running", _server_down),
    ("GRPO full fine-tuning with the vLLM server on the trainer's GPU", lambda: C.RunConfig(adapter=C.AdapterCfg(method='full'), train=C.TrainCfg(lr=1e-5), method=C.MethodCfg(name='grpo', engine='server'))),
    ("GRPO merging an adapter into 4-bit weights", lambda: C.RunConfig(adapter=C.AdapterCfg(method='qlora'), method=C.MethodCfg(name='grpo', sync='merge'))),
    ("an fms-hf-tuning config with prompt tuning", lambda: C.from_fms({'model_name_or_path': 'm', 'peft_method': 'pt'})),
    ("a data file that does not exist", lambda: _rows('missing.jsonl')),
    ("a JSONL file with a broken line", lambda: _rows(_write('bad.jsonl', '{"text": "ok"}\n{"text": "broken\n'))),
    ("an empty dataset", lambda: _rows(_write('empty.jsonl', ''))),
    ("an unknown toy dataset", lambda: _rows('toy:nope')),
    ("a field that is not there", lambda: _rows_fmt(_write('qa.jsonl', '{"question": "2+2?", "answer": "4"}\n'))),
    ("a response template that is never found", lambda: _tokenize(_write('r.jsonl', '{"text": "Q: 1+1? A: 2"}\n{"text": "### Answer: 3"}\n'), response_template='### Answer:')),
    ("samples longer than max_length, with too_long='raise'", lambda: _tokenize('toy:chat', max_length=16, too_long='raise')),
    ("a model folder that does not exist", lambda: _model('no/such/folder')),
    ("QLoRA on a machine without a GPU", _qlora_cpu),
    ("resume_from='latest' with no checkpoint", _resume),
    ("`ftnb report` on a folder that is not a run", lambda: _cli('report', '.')),
    # config files and values that pydantic or PyYAML would bend or crash on (issue 10)
    ("a config path that is a folder", lambda: C.load(_mkdir('configs'))),
    ("a config file that is not UTF-8", lambda: C.load(_write_bytes('c.yaml', 'train:\n  run_name: caf\xe9\n'.encode('latin-1')))),
    ("a YAML key given twice", lambda: C.load(_write('c.yaml', 'adapter:\n  r: 8\n  alpha: 16\n  r: 32\n'))),
    ("a JSON key given twice", lambda: C.load(_write('c.json', '{"train": {"lr": 1e-4, "lr": 2e-4}}'))),
    ("`r: yes` in a YAML config", lambda: C.load(_write('c.yaml', 'adapter:\n  r: yes\n'))),
    ("`--set adapter.r=true`", lambda: C.apply_sets(C.RunConfig(), ['adapter.r=true'])),
    ("`sleep_level: on` in a YAML config", lambda: C.load(_write('c.yaml', 'method:\n  sleep_level: on\n'))),
    ("a negative seed", lambda: C.apply_sets(C.RunConfig(), ['train.seed=-1'])),
    ("a seed beyond numpy's range", lambda: C.load(_write('c.yaml', 'train:\n  seed: 99999999999\n'))),
    ("max_steps=0", lambda: C.apply_sets(C.RunConfig(), ['train.max_steps=0'])),
    ("max_steps=-5", lambda: C.load(_write('c.yaml', 'train:\n  max_steps: -5\n'))),
    ("`--set train.run_name=2024` (a number for a text field)", lambda: C.apply_sets(C.RunConfig(), ['train.run_name=2024'])),
    ("`run_name: 2024` in a YAML config", lambda: C.load(_write('c.yaml', 'train:\n  run_name: 2024\n'))),
    ("a misspelt key in an fms-hf-tuning config", lambda: C.from_fms({'model_name_or_path': 'm', 'learning_rte': 1e-4})),
    ("an fms-hf-tuning config with auto_gptq but no LoRA", lambda: C.from_fms({'model_name_or_path': 'm', 'auto_gptq': ['triton_v2']})),
    # data
    ("a JSON array saved as .jsonl", lambda: _rows(_write('rows.jsonl', '[\n  {"text": "a"},\n  {"text": "b"}\n]\n'))),
    ("JSON lines saved as .json", lambda: _rows(_write('rows.json', '{"text": "a"}\n{"text": "b"}\n'))),
    ("a data file that is not UTF-8", lambda: _rows(_write_bytes('rows.jsonl', '{"text": "caf\xe9"}\n'.encode('latin-1')))),
    ("a dataset folder that does not exist (`./ds`)", lambda: _rows('./ds')),
    ("an empty completion", lambda: _tokenize(_write('pc.jsonl', '{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": ""}\n'))),
    ("an empty assistant reply", lambda: _tokenize(_chat([('user', '1+1='), ('assistant', '2')], [('user', '2+2='), ('assistant', '')]))),
    ("a chat that starts with the assistant", lambda: _tokenize(_chat([('user', 'hi'), ('assistant', 'yo')], [('assistant', 'hello'), ('user', 'hi'), ('assistant', 'yo')]))),
    ("two assistant turns in a row", lambda: _tokenize(_chat([('system', 'be brief'), ('user', 'hi'), ('assistant', 'yo'), ('assistant', 'again')]))),
    ("two user turns where the chat template forbids it", lambda: _tokenize_strict(_chat([('user', 'hi'), ('assistant', 'yo')], [('user', 'hi'), ('user', 'there'), ('assistant', 'yo')]))),
    # model folders
    ("a model folder without tokenizer files", lambda: _model(_model_dir('m', drop=('tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja')))),
    ("a model.safetensors cut short", lambda: _load(_model_dir('m', cut='model.safetensors'))),
    ("a config.json that does not parse", lambda: _model(_model_dir('m', edit=('config.json', '{"model_type": "qwen2",, }')))),
    ("a model folder with only pytorch_model.bin", lambda: _load(_model_dir('m', drop=('model.safetensors',), edit=('pytorch_model.bin', '')))),
    ("a folder with no config.json as the model", lambda: _model(_mkdir('weights'))),
    ("flash_attention_2 on a machine without a GPU", lambda: _load(attn_implementation='flash_attention_2')),
    # adapters
    ("modules_to_save naming a parent module", lambda: _adapter(['all-linear'], modules_to_save=['layers'])),
    ("modules_to_save naming a module the model does not have", lambda: _adapter(['all-linear'], modules_to_save=['wte'])),
    ("a second run with another config into a folder that holds a finished run", _second_run),
    ("resume after changing adapter.r", _resume_changed_r),
    ("train.output_dir is a file", lambda: _train(C.RunConfig(train=C.TrainCfg(output_dir=_write('f', 'x'))))),
    ("resume_from='latest' when the only checkpoint was cut off while saving", _cut_checkpoint),
    ("resume_from a folder that is not a checkpoint", lambda: _train(C.RunConfig(train=C.TrainCfg(output_dir='runs', resume_from='.')))),
    ("ftnb.sft.train given a GRPO config", lambda: __import__('ftnb.sft').sft.train(C.RunConfig(method=C.MethodCfg(name='grpo')))),
    ("the training loss turns NaN", _nan_loss),
    ("GRPO rewards all None (no reference answers)", _rewards_none),
    # acceleration (ftnb.accel): what this machine cannot run is refused when the run starts
    ("FP8 on a machine without an FP8 GPU", lambda: _train(_tiny(), accel_=dict(fp8=True))),
    ("Liger without liger-kernel installed", lambda: _train(_tiny(), accel_=dict(liger=True))),
    ("a QAT group size that does not divide the layers", lambda: _train(_tiny(), accel_=dict(qat=True, qat_group_size=64))),
    ("fake quantization delayed past the last step", lambda: C.RunConfig(accel=C.AccelCfg(qat=True, qat_after_steps=20), train=C.TrainCfg(max_steps=20))),
    ("8-bit AdamW without bitsandbytes installed", lambda: _train(_tiny(), accel_=dict(optim='adamw_bnb_8bit'))),
    # several processes (ftnb.launch, issue 13)
    ("`--nproc 0`", lambda: _launch(C.RunConfig(), 0)),
    ("GRPO on two processes", lambda: _launch(C.RunConfig(method=C.MethodCfg(name='grpo')), 2)),
    ("FSDP2 on a machine without a GPU", lambda: _launch(C.RunConfig(accel=C.AccelCfg(fsdp=True)), 2)),
    ("FSDP2 with QLoRA", lambda: C.RunConfig(adapter=C.AdapterCfg(method='qlora'), accel=C.AccelCfg(fsdp=True))),
    # ftnb export (issue 11)
    ("`ftnb export` on a run that left no weights", lambda: _cli('export', _run_dir())),
    ("`ftnb export` of a full fine-tune without --merged", lambda: _cli('export', _run_dir('full', final=True))),
    ("`ftnb export --out` to a folder that exists", lambda: _cli('export', _run_dir(final=True), '--out', _mkdir('out'))),
    ("`ftnb export --merged` of a QLoRA run on a CPU", lambda: _cli('export', _run_dir('qlora', final=True), '--merged')),
]

def _run_dir(method='lora', final=False):
    "A run folder with its config.yaml (and an empty final/): export checks these before it loads anything."
    C.save(C.RunConfig(adapter=C.AdapterCfg(method=method)), Path('run')/'config.yaml')
    if final: (Path('run')/'final').mkdir()
    return 'run'

def _mkdir(name):
    Path(name).mkdir(); return name

def _write_bytes(name, data):
    Path(name).write_bytes(data); return name

def _chat(*convs):
    rows = [{'messages': [{'role': r, 'content': c} for r, c in conv]} for conv in convs]
    return _write('chat.jsonl', ''.join(json.dumps(r) + '\n' for r in rows))

def _tokenize_strict(path):
    "tokenize with a chat template that, like many models' templates, refuses two turns of one role in a row."
    from ftnb.data import load_rows, tokenize
    tok = _tok()
    tok.chat_template = ("{% for m in messages %}{% if not loop.first and m['role'] == messages[loop.index0 - 1]['role'] %}"
                         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% endfor %}" + tok.chat_template)
    cfg = C.DataCfg(path=path)
    return tokenize(load_rows(cfg), tok, cfg)

def _model_dir(name, drop=(), cut=None, edit=None):
    "A copy of the tiny model's folder with files dropped, one cut in half, or one rewritten."
    import shutil
    from ftnb.testing import tiny_dir
    shutil.copytree(tiny_dir('qwen2'), name)
    for f in drop: (Path(name)/f).unlink()
    if cut: b = (Path(name)/cut).read_bytes(); (Path(name)/cut).write_bytes(b[:len(b) // 2])
    if edit: (Path(name)/edit[0]).write_text(edit[1])
    return name

def _load(name='tiny-qwen2', **model):
    from ftnb.models import load_model
    return load_model(C.RunConfig(model=C.ModelCfg(name_or_path=name, **model)))

def _rows_fmt(path):
    from ftnb.data import detect_format
    cfg = C.DataCfg(path=path)
    return detect_format(_rows(path), cfg)

def _model(name):
    from ftnb.models import load_tokenizer
    return load_tokenizer(C.ModelCfg(name_or_path=name))

def message(fn, tmp) -> str:
    "Run a case inside `tmp`; the FtnbError's message, with the folder written as `.`."
    cwd = os.getcwd(); os.chdir(tmp)
    try: fn()
    except FtnbError as e:
        msg = f'{type(e).__name__}: {e}'.replace(str(Path(tmp).resolve()), '.').replace(str(tmp), '.')
        return ' '.join(msg.split())
    finally: os.chdir(cwd)
    raise AssertionError('no FtnbError raised')

def table(tmp_factory) -> str:
    rows = ["# Bad inputs and the errors they get", "",
            "Generated by `python tests/test_errors.py` from its cases; each row is a test (`pytest tests/test_errors.py`).", "",
            "| # | input | error |", "|---|---|---|"]
    for i, (what, fn) in enumerate(CASES, 1):
        msg = message(fn, tmp_factory()).replace('|', '\\|')
        rows.append(f"| {i} | {what} | `{msg}` |" if '`' not in msg else f"| {i} | {what} | `` {msg} `` |")  # `` keeps inner backticks
    return '\n'.join(rows) + '\n'

def doc_rows() -> dict[str, str]:
    out = {}
    for line in DOC.read_text().splitlines():
        parts = [p.strip() for p in line.split(' | ')]
        if line.startswith('| ') and parts[0].lstrip('| ').isdigit():
            cell = parts[2].rstrip(' |')
            cell = cell[3:-3] if cell.startswith('`` ') and cell.endswith(' ``') else cell[1:-1]  # one code span, single or double
            out[parts[1]] = cell.replace('\\|', '|')
    return out

# rows that load a model and train or adapt it (seconds each): `-m "not trains"` leaves the config and data rows, which
# the mutation run (.ci/mutation.py) repeats for every mutant
TRAINS = {_second_run, _resume_changed_r, _nan_loss, _rewards_none, _resume}
CPU_ONLY = {"QLoRA on a machine without a GPU", "flash_attention_2 on a machine without a GPU", "`ftnb export --merged` of a QLoRA run on a CPU",
            "FP8 on a machine without an FP8 GPU", "Liger without liger-kernel installed", "8-bit AdamW without bitsandbytes installed",
            "GRPO on two processes", "FSDP2 on a machine without a GPU"}  # errors of a machine without CUDA (and its extras)
def _param(what, fn):
    slow = fn in TRAINS or what == "a target module the model does not have"
    marks = [pytest.mark.trains] if slow else []
    if what in CPU_ONLY:
        import torch
        marks.append(pytest.mark.skipif(torch.cuda.is_available(), reason='the error of a machine without CUDA (and without the GPU extras)'))
    return pytest.param(what, fn, id=what, marks=marks)

@pytest.mark.parametrize('what,fn', [_param(*c) for c in CASES])
def test_case(what, fn, tmp_path):
    msg = message(fn, tmp_path)
    assert 'Traceback' not in msg
    assert doc_rows().get(what) == msg, f'docs/errors.md is stale for {what!r}: run python tests/test_errors.py'

def test_at_least_fifty_rows():
    assert len(doc_rows()) == len(CASES) >= 50

if __name__ == '__main__':
    import tempfile
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table(tempfile.mkdtemp))
    print(f'wrote {DOC} ({len(CASES)} rows)')
