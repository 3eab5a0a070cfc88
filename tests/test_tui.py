"""`ftnb train`'s terminal view (ftnb.tui): the live view in a pseudo-terminal, the plain log when piped or with `--plain`,
and a GRPO stream's completions with their rewards. One real training runs in a pty in a subprocess (started first, so
it trains while this process runs the in-process ones); the piped and `--plain` runs call `ftnb.cli.run` here."""
import fcntl, io, os, pty, re, struct, subprocess, sys, termios, threading
from pathlib import Path

import pytest

FTNB = str(Path(sys.executable).parent/'ftnb')  # the console script beside python, as in tests/test_cli.py
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1', TERM='xterm-256color')
ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')
STEPS = 3

def args(out, name, *extra) -> list[str]:
    "`ftnb train` on the tiny model and the toy data: 3 steps, each logged, no evaluation, no checkpoint before the end."
    sets = {'train.max_steps': STEPS, 'train.logging_steps': 1, 'train.output_dir': out, 'train.run_name': name,
            'data.max_samples': 32, 'data.eval_fraction': 0, 'train.batch_size': 4}
    return ['train', *[a for k, v in sets.items() for a in ('--set', f'{k}={v}')], *extra]

def in_pty(argv, cols=110, rows=30) -> tuple[subprocess.Popen, dict]:
    "Start `argv` with a pseudo-terminal as stdin, stdout and stderr; a thread collects what it writes (in out['text'])."
    m, s = pty.openpty()
    fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
    p = subprocess.Popen(argv, stdin=s, stdout=s, stderr=s, env=ENV, close_fds=True); os.close(s)
    out, chunks = {}, []
    def read():
        while True:
            try: b = os.read(m, 65536)
            except OSError: break   # EIO: the child closed the terminal
            if not b: break
            chunks.append(b)
        os.close(m); out['text'] = b''.join(chunks).decode('utf-8', 'replace')
    out['thread'] = threading.Thread(target=read, daemon=True); out['thread'].start()
    return p, out

@pytest.fixture(scope='module', autouse=True)
def live(tmp_path_factory):
    "The live view: `ftnb train` in a pty, started before the other tests of this file (they run while it trains); checked last."
    d = tmp_path_factory.mktemp('live')
    p, out = in_pty([FTNB, *args(str(d/'runs'), 'live')])
    yield p, out
    if p.poll() is None: p.kill()

def _plain_lines(text:str) -> list[str]: return [l for l in text.splitlines() if re.match(r'step \d+/\d+ ', l)]

def test_piped_output_is_a_plain_log(tmp_path, capfd):
    from ftnb.cli import run
    assert run(args(str(tmp_path), 'piped')) == 0
    out = capfd.readouterr().out
    steps = _plain_lines(out)
    assert [l.split()[1] for l in steps] == [f'{s}/{STEPS}' for s in range(1, STEPS + 1)], out   # one line per logged step
    assert all(' loss ' in l and ' lr ' in l and ('tok/s' in l or 'steps/s' in l) for l in steps), steps
    assert '\x1b[' not in out and "{'loss'" not in out and "'learning_rate'" not in out and 'it/s]' not in out
    warns = [l for l in out.splitlines() if l.startswith('warning: ')]
    assert len(warns) == len(set(warns))                            # each warning once
    assert out.splitlines()[-1].startswith(f'finished at step {STEPS}:')

def test_plain_flag_in_a_pty(tmp_path, monkeypatch):
    "`--plain` with a terminal as stdout: the plain log all the same."
    from ftnb.cli import run
    m, s = pty.openpty()
    fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack('HHHH', 30, 110, 0, 0))
    tty = io.TextIOWrapper(os.fdopen(s, 'wb', buffering=0), encoding='utf-8', line_buffering=True)
    assert tty.isatty()
    chunks = []
    def read():
        while True:
            try: b = os.read(m, 65536)
            except OSError: break
            if not b: break
            chunks.append(b)
    t = threading.Thread(target=read, daemon=True); t.start()
    monkeypatch.setattr(sys, 'stdout', tty)
    try: assert run(args(str(tmp_path), 'plain', '--plain')) == 0
    finally: monkeypatch.undo(); tty.close(); t.join(10); os.close(m)
    out = b''.join(chunks).decode('utf-8', 'replace').replace('\r\n', '\n')
    assert len(_plain_lines(out)) == STEPS and '\x1b[' not in out and f'finished at step {STEPS}:' in out, out

def test_grpo_stream_shows_completions_with_rewards():
    "A GRPO run's events (no training): the reward is the key metric, and the newest step's completions come with their rewards."
    from ftnb.events import Log, Metrics, Rollouts, RunEnd, RunStart
    from ftnb.tui import TermView
    v = TermView(rollout_lines=3, clock=lambda: 130)
    v.update(RunStart(time=100, max_steps=20, config={'method': {'name': 'grpo'}, 'model': {'name_or_path': 'tiny-qwen2'}}))
    for s in range(1, 11):
        rows = [{'prompt': f'{s}+{k}=', 'completion': f'answer {s + k}' + ' and more words' * 20 if k else 'wrong',
                 'reward': float(k > 0), 'rewards/exact_answer': float(k > 0), 'advantage': k - 1.5} for k in range(4)]
        lines = v.update([Metrics(step=s, time=100 + 3*s, values={'reward': s / 10, 'reward_std': 0.3, 'kl': 0.01*s, 'entropy': 0.3}),
                          Rollouts(step=s, rows=rows)])
        assert len(lines) == 1 and lines[0].startswith(f'step {s}/20') and f'reward {s / 10:g}' in lines[0]   # plain: one line a step
    v.update([Log(level='warning', message='zero-std groups'), RunEnd(step=10, status='finished')])
    screen = v.text(width=80)
    assert 'ftnb grpo · tiny-qwen2' in screen and 'finished' in screen and 'step 10/20' in screen
    assert re.search(r'reward 1 +▁▂▃▄▅▅▆▇█', screen) or re.search(r'reward 1 +[▁▂▃▄▅▆▇█]{10}', screen), screen
    assert 'completions, step 10' in screen and re.search(r'\n +0 +-1.5 +wrong', screen) and re.search(r'\n +1 +-0.5 +answer 11 and more', screen), screen
    assert '⚠ zero-std groups' in screen and max(map(len, screen.splitlines())) <= 80   # long completions cut to the width
    assert 'answer 13' not in screen                                                  # 3 of the 4 rows

def test_live_view_in_a_pty(live):
    p, out = live
    assert p.wait(timeout=400) == 0
    out['thread'].join(30)
    raw = out['text']; screen = ANSI.sub('', raw)
    assert '\x1b[' in raw                                            # drawn with escapes: a terminal was seen
    assert f'step {STEPS}/{STEPS}' in screen and 'ETA' in screen and 'elapsed' in screen
    assert re.search(r'loss \d\.\d+ +[▁▂▃▄▅▆▇█]{2,}', screen), screen[-1500:]  # the loss with its sparkline
    assert 'ftnb sft · tiny-qwen2' in screen and 'finished' in screen and f'finished at step {STEPS}:' in screen
    assert "{'loss'" not in screen and 'it/s]' not in screen          # no transformers dicts, no tqdm bars

def test_plain_line_of_a_grpo_heldout_eval():
    "A GRPO held-out eval row (eval/reward, eval/accuracy) prints as an eval line; the live frame's reward stays the training one."
    from ftnb.tui import TermView, plain_line
    v = TermView()
    v.data.add_row({'step': 2, 'time': 1.0, 'reward': 0.25, 'reward_std': 0.1})
    row = {'step': 2, 'time': 1.0, 'eval/reward': 0.5, 'eval/accuracy': 0.375}
    v.data.add_row(row)
    line = plain_line(v.data, row)
    assert 'eval reward 0.5' in line and 'accuracy 0.375' in line, line
    assert str(v._metrics()).startswith('reward 0.25'), str(v._metrics())
