"The README is generated from nbs/index.ipynb, and CI runs exactly its test command."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def commands():
    md = (ROOT/'README.md').read_text()
    return re.findall(r'```sh\n(pip install [^\n]+)\n```', md)

def test_readme_is_current():
    r = subprocess.run([sys.executable, str(ROOT/'.ci'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_two_setup_commands():
    cmds = commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].endswith('ftnb demo') and 'nbdev-test' in cmds[1] and 'pytest' in cmds[1]

def test_ci_runs_the_readme_test_command():
    ci = (ROOT/'.ci'/'run').read_text()
    assert commands()[1] in ci.splitlines()
    assert 'HF_HUB_OFFLINE=1' in ci

def test_import_is_light():
    code = "import sys, ftnb; bad = [m for m in ('torch', 'vllm', 'trl', 'bitsandbytes', 'liger_kernel', 'torchao', 'ipywidgets', 'gptqmodel', 'optimum', 'kernels', 'anywidget', 'flash_attn', 'plotly') if m in sys.modules]; print(bad); assert not bad"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_python_version_claim():
    "The README's 'Python 3.11 or newer' is what pyproject.toml requires, and this interpreter (CI's: 3.11) meets it."
    import tomllib
    req = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['requires-python']
    assert req == '>=3.11' and 'Python 3.11 or newer' in (ROOT/'README.md').read_text() and sys.version_info >= (3, 11)

def test_mutation_scores_are_the_json():
    "The README's mutation scores ('config 1100 of 1272') are docs/mutation.json's, module by module, and name every module it lists."
    import json, re
    text = (ROOT/'README.md').read_text()
    para = text[text.index('Mutation testing'):].split('\n\n')[0]
    mods = re.search(r'python \.ci/mutation\.py ([a-z ]+)`', para).group(1).split()
    got = {m: (int(k), int(n)) for m, k, n in re.findall(r'\b([a-z]+) (\d+) of (\d+)', para)}
    saved = json.loads((ROOT/'docs'/'mutation.json').read_text())
    assert set(got) == set(mods) and all(got[m] == (saved[m]['killed'], saved[m]['mutants']) for m in mods), (got, mods)
