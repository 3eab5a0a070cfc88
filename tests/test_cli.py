"""The README's shell path, run as written: `ftnb config`, `ftnb train my.yaml --set ...`, `ftnb report`, `ftnb export`; `ftnb.train`
as the package attribute; an fms-hf-tuning JSON passed to `ftnb train` as it is."""
import json, os, re, shlex, subprocess, sys
from pathlib import Path

import yaml

import ftnb
from ftnb.events import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
FTNB = str(Path(sys.executable).parent/'ftnb')  # the console script that `pip install -e .` put beside python
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1')

def readme_block(marker:str) -> list[str]:
    "The lines of the README's ```sh block that contains `marker`, comments stripped."
    for block in re.findall(r'```sh\n(.*?)```', (ROOT/'README.md').read_text(), re.S):
        if marker in block: return [l.split('#')[0].strip() for l in block.splitlines() if l.split('#')[0].strip()]
    raise AssertionError(f'no sh block with {marker!r} in README.md')

def sh(line:str, cwd:Path) -> str:
    "Run one README line (with `>` redirection) through the installed `ftnb` command."
    argv, out = shlex.split(line), None
    if '>' in argv: i = argv.index('>'); argv, out = argv[:i], cwd/argv[i + 1]
    assert argv[0] == 'ftnb', line
    r = subprocess.run([FTNB, *argv[1:]], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (line, r.stderr[-2000:])
    if out: out.write_text(r.stdout)
    return r.stdout

def test_readme_shell_path(tmp_path):
    lines = readme_block('ftnb train my.yaml')
    assert [l.split()[1] for l in lines] == ['config', 'train', 'report', 'export']
    for l in lines: sh(l, tmp_path)
    run = tmp_path/'runs'/'run'
    saved = yaml.safe_load((run/'config.yaml').read_text())
    assert saved['adapter']['r'] == 8 and saved['train']['max_steps'] == 50   # the --set overrides reached the run
    steps = [r['step'] for r in read_jsonl(run/'metrics.jsonl') if 'loss' in r]
    assert max(steps) == 50 and json.loads((run/'result.json').read_text())['status'] == 'finished'
    assert (run/'final'/'adapter_config.json').exists() and 'plotly' in (run/'report.html').read_text()
    exp = run/'export'/'adapter'   # `ftnb export runs/run`: the adapter alone, with a card naming the base model
    assert json.loads((exp/'adapter_config.json').read_text())['r'] == 8 and 'base_model: tiny-qwen2' in (exp/'README.md').read_text()

def test_package_train_is_the_entry_point():
    "`ftnb.train` is the one entry point the README names, and it takes every method (it dispatches GRPO too)."
    import inspect
    from ftnb import entry
    assert callable(ftnb.train) and list(inspect.signature(ftnb.train).parameters)[:1] == ['cfg']
    assert ftnb.train is entry.train

def test_cli_and_package_reach_the_same_trainer(monkeypatch, tmp_path):
    "`ftnb train` (the CLI) and `ftnb.train` hand an SFT config to ftnb.sft.train and a GRPO config to ftnb.grpo.train."
    from ftnb import grpo, sft
    from ftnb.cli import run
    from ftnb.runs import RunResult
    seen = []
    def stand_in(name):
        def train(cfg, *a, **kw): seen.append((name, cfg.method.name)); return RunResult(tmp_path, 'finished', 0)
        return train
    monkeypatch.setattr(sft, 'train', stand_in('sft')); monkeypatch.setattr(grpo, 'train', stand_in('grpo'))
    (tmp_path/'g.yaml').write_text('method:\n  name: grpo\n'); (tmp_path/'s.yaml').write_text('train:\n  lr: 1e-4\n')
    for name in ('s.yaml', 'g.yaml'): assert run(['train', str(tmp_path/name)]) == 0
    ftnb.train(ftnb.RunConfig()); ftnb.train(ftnb.RunConfig.model_validate({'method': {'name': 'grpo'}}))
    assert seen == [('sft', 'sft'), ('grpo', 'grpo')] * 2, seen

def test_fms_json_runs_as_it_is(tmp_path):
    fms = {'model_name_or_path': 'tiny-qwen2', 'training_data_path': 'toy:prompt_completion', 'output_dir': 'out/fms-run',
           'peft_method': 'lora', 'r': 4, 'lora_alpha': 8, 'target_modules': ['q_proj', 'v_proj'], 'max_steps': 3,
           'per_device_train_batch_size': 2, 'learning_rate': 1e-3, 'max_seq_length': 64, 'torch_dtype': 'float32'}
    (tmp_path/'fms.json').write_text(json.dumps(fms))
    out = sh('ftnb train fms.json', tmp_path)
    run = tmp_path/'out'/'fms-run'
    assert 'finished at step 3: out/fms-run' in out
    saved = yaml.safe_load((run/'config.yaml').read_text())
    assert (saved['adapter']['method'], saved['adapter']['r'], saved['adapter']['alpha']) == ('lora', 4, 8)
    assert sorted(saved['adapter']['target_modules']) == ['q_proj', 'v_proj'] and saved['data']['max_length'] == 64
    assert json.loads((run/'final'/'adapter_config.json').read_text())['r'] == 4
