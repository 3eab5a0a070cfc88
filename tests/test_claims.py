"docs/claims.md stays true to the suite: every row has a status, and every test it names exists."
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATUSES = ('checked', 'bench', 'GPU test', 'removed')

def rows():
    for l in (ROOT/'docs'/'claims.md').read_text().splitlines():
        if re.match(r'\| [A-Z]+\d+ \|', l): yield l

def test_every_claim_has_a_check():
    rs = list(rows())
    assert len(rs) >= 200
    bad = [r[:60] for r in rs if not r.rstrip(' |').rsplit('|', 1)[1].strip().startswith(STATUSES)]
    assert not bad, bad

def test_named_tests_and_results_exist():
    "A row that names `tests/x.py::test_y`, `x.py::test_y` or a bench JSON points at something that is there."
    missing = []
    for r in rows():
        for f, name in re.findall(r'(test_\w+\.py)::(test_\w+)', r):
            hits = list((ROOT/'tests').rglob(f))
            if not hits or not any(re.search(rf'def {name}\b', h.read_text()) for h in hits): missing.append(f'{f}::{name}')
        for j in re.findall(r'([\w.]+\.(?:json|log))', r):
            if j.startswith(('grpo_', 'engine_', 'dashboard_', 'sft_', 'gpu_tests_')) and not (ROOT/'bench'/'results'/j).exists(): missing.append(j)
    assert not missing, missing
