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
