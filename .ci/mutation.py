#!/usr/bin/env python
"""Mutation testing (issue 14): mutmut against the fast pytest tests of the modules where a silent mistake costs most.

Usage: python .ci/mutation.py [module ...]   (default: all of MODULES; about 5-30 min each on 2 cores, not run in CI)
Each module runs in its own copy of the committed tree (git archive HEAD) with its own [tool.mutmut] section, so
nothing here touches the checkout. Prints killed/total per module and writes docs/mutation.json.
mutmut also mutates docstrings; a docstring mutant that survives is harmless, and is counted apart."""
import json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {  # module -> the pytest files that test it directly (fast, no browser, no GPU)
    'config': ['tests/test_config.py', 'tests/test_config_messages.py', 'tests/test_config_checks.py', 'tests/test_errors.py'],  # without the rows that train (SKIP)
    'data': ['tests/test_data.py', 'tests/test_data_messages.py', 'tests/test_errors.py'],
    'rewards': ['tests/test_rewards.py', 'tests/test_rewards_messages.py'],
    'events': ['tests/test_events.py'],
    'runs': ['tests/test_runs_units.py'],  # the unit tests; tests/test_runs.py's kill trials train real models (hours per mutant run)
}
SKIP = {  # tests that train a model: each takes seconds, and mutmut runs them for every mutant they cover
    'data': ['-k', 'not trainer and not packing_keeps', '-m', 'not gpu and not trains'],
    'rewards': ['-k', 'not grpo_trainer'],
    'config': ['-m', 'not gpu and not trains'],
}

def run(mod:str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f'mut-{mod}-'))
    subprocess.run(f'git archive HEAD | tar -x -C {tmp}', shell=True, cwd=ROOT, check=True)
    with open(tmp/'pyproject.toml', 'a') as f:
        f.write(f'\n[tool.mutmut]\nsource_paths = ["ftnb/{mod}.py"]\nalso_copy = ["ftnb/", "tests/", "docs/", "nbs/", "README.md", ".ci/"]\n'
                f'pytest_add_cli_args_test_selection = {json.dumps(MODULES[mod])}\n'
                + f'pytest_add_cli_args = {json.dumps(["-n", "0", *SKIP.get(mod, [])])}\n')  # mutmut runs pytest in its own process: no xdist workers
    mutmut = str(Path(sys.executable).parent/'mutmut')
    # tests/conftest.py points subprocesses at the mutated copy (PYTHONPATH) once mutmut has set MUTANT_UNDER_TEST
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    t0 = time.time()
    with open(tmp/'mutmut.log', 'w') as log:  # kept: a run where nothing was checked says why there
        subprocess.run([mutmut, 'run', '--max-children', '1'], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    res = subprocess.run([mutmut, 'results', '--all', 'true'], cwd=tmp, env=env, capture_output=True, text=True).stdout
    status = dict(re.findall(r'^\s*(\S+): (\w[\w ]*)$', res, re.M))
    src = (tmp/'ftnb'/f'{mod}.py').read_text()
    docs = {m for m, s in status.items() if s not in ('killed', 'timeout') and _is_docstring(tmp, env, mutmut, m)}  # survivors only: one `mutmut show` each
    killed = sum(s in ('killed', 'timeout') for s in status.values())  # a mutant that hangs the tests is caught too
    survived = sorted(m for m, s in status.items() if s not in ('killed', 'timeout'))
    out = {'module': mod, 'mutants': len(status), 'killed': killed, 'score': round(killed / max(len(status), 1), 3),
           'survived_docstring': sorted(m for m in survived if m in docs), 'survived': sorted(m for m in survived if m not in docs),
           'statuses': {s: sum(v == s for v in status.values()) for s in set(status.values())}, 'seconds': round(time.time() - t0)}
    out['score_without_docstrings'] = round(killed / max(len(status) - len(out['survived_docstring']), 1), 3)
    return out

def _is_docstring(tmp, env, mutmut, m) -> bool:
    "True when mutant `m` only changes a docstring (mutmut marks string mutants with XX...XX)."
    diff = subprocess.run([mutmut, 'show', m], cwd=tmp, env=env, capture_output=True, text=True).stdout
    plus = [l for l in diff.splitlines() if l.startswith('+') and not l.startswith('+++')]
    return len(plus) == 1 and re.fullmatch(r'\+\s*".*"\s*', plus[0]) is not None  # a one-line docstring, changed

if __name__ == '__main__':
    mods = sys.argv[1:] or list(MODULES)
    results = [run(m) for m in mods]
    for r in results:
        print(f"{r['module']:8} {r['killed']}/{r['mutants']} killed ({100 * r['score']:.0f}%; {100 * r['score_without_docstrings']:.0f}% "
              f"without docstring mutants), {len(r['survived'])} survivors, {r['seconds']} s")
    p = ROOT/'docs'/'mutation.json'
    old = json.loads(p.read_text()) if p.exists() else {}
    old.update({r['module']: r for r in results})
    p.write_text(json.dumps(old, indent=1) + '\n')
