"`ftnb demo` end to end: held-out loss falls and accuracy rises on the toy addition task (the full demo, ~1-2 min on 2 cores)."
import subprocess, sys

def test_demo_learns(tmp_path):
    r = subprocess.run([sys.executable, '-c', 'from ftnb.cli import main; main()', 'demo', '--out', str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in r.stdout.splitlines() if l.split()[:1] in (['loss'], ['accuracy'])}
    (loss0, loss1), (acc0, acc1) = rows['loss'], rows['accuracy']
    assert loss1 < 0.5 * loss0, rows            # held-out loss at least halves
    assert acc0 < 0.05 and acc1 > 0.5, rows     # from guessing to most sums right
    report = tmp_path/'demo'/'report.html'
    assert report.exists() and 'plotly' in report.read_text()
