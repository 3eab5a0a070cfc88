"""`ftnb demo` end to end, against what the docs claim of it.

The claims (nbs/01_testing.ipynb, nbs/14_demo.ipynb, README): held-out accuracy goes from 0% to most sums right
(seed 0: 96% on this project's 2-core machine, 2026-12-02), and the run takes one to two minutes on 2 cores
(69-77 s on an idle Xeon; 136 s here with three other jobs sharing the 2 cores).
"""
import re, subprocess, sys
from pathlib import Path

# A wrong demo (too few steps, a broken mask, bf16 on CPU) lands far below this: 1000 steps left about half the
# seeds under 50%, bf16 gave 13% in a matched run (nbs/01_testing.ipynb). Seed 0 gives 96%; other CPUs round
# differently, so the bound leaves room for a few sums more or less.
MIN_ACCURACY = 0.85
# "one to two minutes" with a generous factor for a loaded 2-core CI machine; a demo that became 3x slower fails.
MAX_TRAIN_SECONDS = 300

def test_demo_learns(tmp_path):
    ftnb = str(Path(sys.executable).parent/'ftnb')  # the installed command, as the README runs it
    r = subprocess.run([ftnb, 'demo', '--out', str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in r.stdout.splitlines() if l.split()[:1] in (['loss'], ['accuracy'])}
    (loss0, loss1), (acc0, acc1) = rows['loss'], rows['accuracy']
    assert loss1 < 0.05 * loss0, rows           # held-out loss falls by more than 20x (seed 0: 6.29 -> 0.044)
    assert acc0 == 0 and acc1 >= MIN_ACCURACY, rows
    secs = float(re.search(r'trained in (\d+) s', r.stdout).group(1))
    assert secs < MAX_TRAIN_SECONDS, f'the demo trained for {secs} s; the docs say one to two minutes'
    report = tmp_path/'demo'/'report.html'
    assert report.exists() and 'plotly' in report.read_text()
