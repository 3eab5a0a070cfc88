"Faults around a run folder (ftnb.runs): kill -9 at random moments and during saves, SIGTERM, two runs in one folder, resume checks, guards."
import hashlib, json, multiprocessing as mp, os, random, signal, threading, time
from pathlib import Path

import pytest
import ftnb
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from ftnb import runs
from ftnb.config import ConfigError, RunConfig
from ftnb.events import read_events, read_jsonl
from ftnb.launch import own_tqdm_lock
from ftnb.viz import load_run

# Each trial runs in a forked child of this process: torch, transformers and trl are already imported there (a fresh
# `python -m` pays ~15 s of imports per start on the 2-core machine, 20 trials x 2 starts would not fit in minutes).
FORK = mp.get_context('fork')
STEPS = 6

def cfg_for(tmp_path, name, **train):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 96},
        'adapter': {'method': 'full'},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'batch_size': 16, 'lr': 2e-3, 'logging_steps': 1,
                  'max_steps': STEPS, 'save_steps': 1, 'save_total_limit': 2, 'seed': 0, **train}})

def tree_hash(d:Path) -> str:
    "Names, bytes and link targets of everything under `d`."
    h = hashlib.sha256()
    for p in sorted(d.rglob('*')):
        h.update(str(p.relative_to(d)).encode())
        if p.is_symlink(): h.update(os.readlink(p).encode())
        elif p.is_file(): h.update(p.read_bytes())
    return h.hexdigest()

def losses(run_dir) -> dict:
    return {r['step']: r['loss'] for r in read_jsonl(Path(run_dir)/'metrics.jsonl') if 'loss' in r}

def in_child(fn, *args) -> int:
    "Run `fn(*args)` in a forked child; its exit code (-9 when it was SIGKILLed)."
    p = FORK.Process(target=fn, args=args); p.start(); p.join(600)
    if p.is_alive(): p.kill(); p.join(); raise AssertionError('child hung')
    return p.exitcode

# ---------------------------------------------------------------------------------------------------------- kill -9
def _train_and_die(cfg_json:str, how:str, at:int):
    "Child: train; with how='save' or 'rotate', SIGKILL itself in the middle of save number `at`."
    own_tqdm_lock()  # a kill while a bar is drawn would leave the lock it shares with pytest held: the resume below hung CI
    cfg = RunConfig.model_validate_json(cfg_json)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    n = {'k': 0}
    if how == 'save':  # after the weights and optimizer are written, before the trainer state: a half checkpoint
        from transformers import Trainer
        orig = Trainer._save_rng_state
        def rng(self, out):
            n['k'] += 1
            if n['k'] == at: die()
            return orig(self, out)
        Trainer._save_rng_state = rng
    if how == 'rotate':  # the checkpoint is renamed into place, the old ones not yet rotated
        orig_rot = runs.rotate
        def rot(*a, **k):
            n['k'] += 1
            if n['k'] == at: die()
            return orig_rot(*a, **k)
        runs.rotate = rot
    if how == 'delete':  # rotation deleting an old checkpoint: every file removed, the folder not yet (rmtree's last act)
        import shutil
        orig_rm = shutil.rmtree
        def rm(path, *a, **k):
            if Path(path).is_dir() and Path(path).name.removeprefix('.deleting-').startswith('checkpoint-'):
                n['k'] += 1
                if n['k'] == at:
                    for f in sorted(Path(path).rglob('*'), reverse=True): f.rmdir() if f.is_dir() else f.unlink()
                    die()
            return orig_rm(path, *a, **k)
        runs.shutil.rmtree = rm
    ftnb.train(cfg)

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    "The uninterrupted run every trial is compared with (same seed), and its duration in a child."
    d = tmp_path_factory.mktemp('straight')
    cfg = cfg_for(d, 'ref')
    p = FORK.Process(target=_train_and_die, args=(cfg.model_dump_json(), 'none', 0)); p.start()
    wait_for_step(cfg.run_dir, p); t0 = time.time()
    wait_for_step(cfg.run_dir, p, STEPS); secs = time.time() - t0
    p.join(600); assert p.exitcode == 0, p.exitcode
    run = cfg.run_dir
    # secs: from the first logged step to the last, the span a random kill is drawn from (start-up is not counted: on a
    # loaded 2-core machine it varies from 2 to 20 s, and kills drawn over it landed before the first step)
    return dict(dir=run, secs=secs, losses=losses(run), weights=load_file(run/'final'/'model.safetensors'))

def wait_for_step(run_dir:Path, p, step:int=1, secs:float=300):
    "Wait until the child `p` has logged `step` into run_dir/metrics.jsonl (up to `secs`: a loaded 2-core machine)."
    m, t0 = run_dir/'metrics.jsonl', time.time()
    while time.time() - t0 < secs:
        if m.exists() and any(r.get('step', 0) >= step for r in read_jsonl(m)): return
        if not p.is_alive(): raise AssertionError(f'the child ended (exit {p.exitcode}) before logging step {step}')
        time.sleep(0.02)
    p.kill(); p.join(); raise AssertionError(f'the child never logged step {step} in {secs} s')

def _trial(tmp_path, straight, i:int, how:str, rng:random.Random) -> str:
    cfg = cfg_for(tmp_path, f'trial-{i}')
    if how == 'random':
        # a random moment of training: after the first logged step, anywhere up to the straight run's last step
        p = FORK.Process(target=_train_and_die, args=(cfg.model_dump_json(), how, 0)); p.start()
        wait_for_step(cfg.run_dir, p)
        time.sleep(rng.uniform(0, 1.0) * straight['secs']); os.kill(p.pid, signal.SIGKILL); p.join()
    else:  # save k of 6 (k >= 2), rotation k, or delete k of the 4 (saves 3 to 6 each delete one, limit 2)
        at = rng.randint(1, STEPS - 2) if how == 'delete' else rng.randint(2, STEPS)
        assert in_child(_train_and_die, cfg.model_dump_json(), how, at) == -signal.SIGKILL
    d = cfg.run_dir
    if not (d/'result.json').exists(): return 'before the claim'
    # every checkpoint-N in the folder is whole: a kill during a save leaves at most a .saving folder
    assert all(runs.complete(p) for p in runs.ckpt_dirs(d)), [sorted(x.name for x in p.iterdir()) for p in runs.ckpt_dirs(d)]
    if runs.read_result(d)['status'] == 'finished': return 'after the end'
    assert runs.status(d) == 'killed'                               # result.json says running; the process is gone
    assert load_run(d).status == 'killed'                           # and so say the plots and the report
    last = runs.latest_checkpoint(d)
    cfg.train.resume_from = 'latest'
    if last is None:
        with pytest.raises(ConfigError, match='no (complete )?checkpoint in'): ftnb.train(cfg)
        return 'before the first checkpoint'
    res = ftnb.train(cfg)
    starts = [e for e in read_events(d) if e.kind == 'RunStart']
    assert starts[-1].step == runs._step(last)                       # resumed from the newest complete checkpoint
    assert (res.status, res.step, runs.status(d)) == ('finished', STEPS, 'finished')
    got = losses(d)
    assert sorted(got) == list(range(1, STEPS + 1))                  # rows after the checkpoint were dropped, then logged again
    for s in range(1, STEPS + 1): assert got[s] == pytest.approx(straight['losses'][s], rel=1e-3), (how, s)
    w = load_file(d/'final'/'model.safetensors')
    for k, v in straight['weights'].items(): torch.testing.assert_close(w[k], v, rtol=1e-3, atol=1e-5)
    assert len(runs.ckpt_dirs(d)) <= 2 and not (d/'.saving').exists() and not list(d.glob('.deleting-*'))
    return f'resumed at {last.name}'

def test_kill_9_at_random_moments_then_resume(tmp_path, straight):
    "23 kills: 10 at random times, 6 inside a checkpoint save, 4 between the rename and the rotation, 3 inside a rotation's delete."
    rng, seen = random.Random(0), []
    kinds = ['random'] * 10 + ['save'] * 6 + ['rotate'] * 4 + ['delete'] * 3
    t0 = time.time()
    for i, how in enumerate(kinds): seen.append((how, _trial(tmp_path, straight, i, how, rng)))
    print(f'{len(kinds)} trials in {time.time() - t0:.0f} s:', seen)
    # a kill inside save k (k >= 2) or before rotation k leaves checkpoint k-1 whole: every one of those resumes
    assert all(s.startswith('resumed') for h, s in seen if h != 'random'), seen
    # random moments may fall before the first checkpoint is whole (or, on a loaded machine, after the end); most resume
    assert sum(s.startswith('resumed') for h, s in seen if h == 'random') >= 5, seen

# ---------------------------------------------------------------------------------------------------------- SIGTERM
class Slow(TrainerCallback):
    "Slow steps, so that a signal lands mid-run."
    def on_step_end(self, args, state, control, **kw): time.sleep(0.2)
    def on_save(self, args, state, control, **kw): time.sleep(0.5)

def _train_slow(cfg_json:str, ignore:tuple=()):
    own_tqdm_lock()
    # the child starts with a terminal's handlers, whatever pytest was started under (`nohup` ignores SIGHUP, a
    # background job SIGINT); `ignore` lists the signals to ignore, as nohup or a background job would
    for s in (signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_IGN if s in ignore else signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN if signal.SIGINT in ignore else signal.default_int_handler)
    ftnb.train(RunConfig.model_validate_json(cfg_json), callbacks=[Slow()])

def _start_and_signal(cfg, *sigs, ignore=()):
    p = FORK.Process(target=_train_slow, args=(cfg.model_dump_json(), ignore)); p.start()
    m = cfg.run_dir/'metrics.jsonl'
    for _ in range(3000):  # up to 300 s: a loaded 2-core machine
        if m.exists() and len(read_jsonl(m)) >= 3: break
        time.sleep(0.1)
    else: p.kill(); p.join(); raise AssertionError('the child never logged 3 steps')
    for s in sigs: os.kill(p.pid, s); time.sleep(0.05)   # apart: two pending signals of one kind would merge into one
    p.join(300); return p.exitcode

def test_sigterm_checkpoints_stops_and_resumes(tmp_path):
    cfg = cfg_for(tmp_path, 'term', max_steps=200, save_steps=100)
    assert _start_and_signal(cfg, signal.SIGTERM) == 0                # the run ends normally, as after a Ctrl-C
    r = runs.read_result(cfg.run_dir)
    assert r['status'] == 'stopped' and runs.status(cfg.run_dir) == 'stopped'
    ck = cfg.run_dir/f"checkpoint-{r['step']}"
    assert runs.complete(ck) and runs.latest_checkpoint(cfg.run_dir) == ck
    assert read_events(cfg.run_dir)[-1].kind == 'RunEnd' and read_events(cfg.run_dir)[-1].status == 'stopped'
    cfg.train.resume_from, cfg.train.max_steps = 'latest', r['step'] + 2
    res = ftnb.train(cfg)
    assert (res.status, res.step) == ('finished', r['step'] + 2)
    assert [e.step for e in read_events(cfg.run_dir) if e.kind == 'RunStart'][-1] == r['step']

def test_second_sigterm_ends_at_once(tmp_path):
    cfg = cfg_for(tmp_path, 'term2', max_steps=200, save_steps=100)
    assert _start_and_signal(cfg, signal.SIGTERM, signal.SIGTERM) != 0
    r = runs.read_result(cfg.run_dir)
    assert r['status'] == 'killed' and 'second SIGTERM' in r['error'], r

def test_sighup_stops_like_sigterm(tmp_path):
    cfg = cfg_for(tmp_path, 'hup', max_steps=200, save_steps=100)
    assert _start_and_signal(cfg, signal.SIGHUP) == 0
    assert runs.read_result(cfg.run_dir)['status'] == 'stopped'

def test_sighup_under_nohup_stays_ignored(tmp_path):
    "Started under nohup (SIGHUP ignored), a hang-up neither stops nor kills the run: it trains to the end."
    cfg = cfg_for(tmp_path, 'nohup', max_steps=12, save_steps=100)
    assert _start_and_signal(cfg, signal.SIGHUP, ignore=(signal.SIGHUP,)) == 0
    r = runs.read_result(cfg.run_dir)
    assert (r['status'], r['step']) == ('finished', 12), r

def test_signal_handlers_only_on_the_main_thread():
    flag, seen = threading.Event(), []
    def body():
        with runs.signals_stop(flag): seen.append(signal.getsignal(signal.SIGTERM))
    h = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body); t.start(); t.join()
    assert seen == [h]

# ------------------------------------------------------------------------------------------- one folder, one run
def two_runs_into_one_folder(tmp_path):
    "A second run with another config into a finished run's folder is refused, and the folder is unchanged."
    a = cfg_for(tmp_path, 'shared', max_steps=3, save_steps=2)
    ftnb.train(a)
    before = tree_hash(a.run_dir)
    b = cfg_for(tmp_path, 'shared', max_steps=2, lr=1e-3)
    with pytest.raises(ConfigError) as e: ftnb.train(b)
    msg = str(e.value)
    assert str(a.run_dir) in msg and "resume_from='latest'" in msg and 'train.run_name' in msg and 'train.overwrite=true' in msg
    assert tree_hash(a.run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['shared']
    return a, b, before

def test_two_runs_into_one_folder_refused(tmp_path):
    two_runs_into_one_folder(tmp_path)

def test_two_runs_check_fails_when_the_claim_is_broken(tmp_path, monkeypatch):
    "Negative control: with the ownership check turned off, the test above fails."
    monkeypatch.setattr(runs.Run, '_check_owner', lambda self: None)
    with pytest.raises((AssertionError, pytest.fail.Exception)): two_runs_into_one_folder(tmp_path)

def test_overwrite_moves_the_old_run_aside(tmp_path):
    a, b, before = two_runs_into_one_folder(tmp_path)
    b.train.overwrite = True
    res = ftnb.train(b)
    old = [p for p in tmp_path.iterdir() if p.name.startswith('shared.old-')]
    assert len(old) == 1 and tree_hash(old[0]) == before               # moved whole, not touched
    assert res.status == 'finished' and sorted(losses(res.run_dir)) == [1, 2]  # the new run's metrics only

def test_failed_start_folder_is_reused(tmp_path):
    "A run that failed before its first step (a typo in the data path) does not block the fixed config."
    cfg = cfg_for(tmp_path, 'typo', max_steps=1)
    cfg.data.path = str(tmp_path/'missing.jsonl')
    with pytest.raises(Exception): ftnb.train(cfg)
    assert runs.status(cfg.run_dir) == 'failed'
    cfg.data.path = 'toy:addition'
    assert ftnb.train(cfg).status == 'finished'

# ------------------------------------------------------------------------------------------------------- resume
def test_resume_with_another_adapter_is_refused_and_changes_nothing(tmp_path):
    cfg = cfg_for(tmp_path, 'lora', max_steps=2, save_steps=2)
    cfg.adapter.method, cfg.adapter.r = 'lora', 8
    ftnb.train(cfg)
    before = tree_hash(cfg.run_dir)
    cfg.adapter.r, cfg.train.resume_from = 16, 'latest'
    with pytest.raises(ConfigError, match='adapter.r: checkpoint 8, config 16'): ftnb.train(cfg)
    assert tree_hash(cfg.run_dir) == before and runs.read_result(cfg.run_dir)['status'] == 'finished'
    # without the saved config (an older checkpoint), the shapes are compared before loading
    (cfg.run_dir/'checkpoint-2'/'ftnb_run.json').unlink(); (cfg.run_dir/'config.yaml').unlink()
    before = tree_hash(cfg.run_dir)
    with pytest.raises(ConfigError, match='saved weights do not fit the model'): ftnb.train(cfg)
    assert tree_hash(cfg.run_dir) == before

def test_half_written_checkpoint_is_passed_over(tmp_path):
    cfg = cfg_for(tmp_path, 'half', max_steps=2, save_steps=2)
    ftnb.train(cfg)
    (cfg.run_dir/'checkpoint-9').mkdir()                              # a save cut off by an older version
    (cfg.run_dir/'checkpoint-9'/'model.safetensors').write_bytes(b'')
    assert runs.latest_checkpoint(cfg.run_dir).name == 'checkpoint-2'
    cfg.train.resume_from, cfg.train.max_steps = 'latest', 3
    assert ftnb.train(cfg).step == 3

def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path/'f').write_text('x')
    with pytest.raises(ConfigError, match=r"train.output_dir=.*is a file"): ftnb.train(cfg_for(tmp_path/'f', 'x'))

@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_output_dir_read_only(tmp_path):
    (tmp_path/'ro').mkdir(); (tmp_path/'ro').chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"train.output_dir=.*cannot be written"): ftnb.train(cfg_for(tmp_path/'ro', 'x'))
    finally: (tmp_path/'ro').chmod(0o700)

# ---------------------------------------------------------------------------------------------- eval, rotation
class StopAt(TrainerCallback):
    def __init__(self, step, flag): self.step, self.flag = step, flag
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step: self.flag.set()

def _evals(run_dir) -> list[int]:
    return sorted(r['step'] for r in read_jsonl(Path(run_dir)/'metrics.jsonl') if 'eval_loss' in r)

@pytest.mark.parametrize('strategy', ['steps', 'epoch'])
def test_stop_and_resume_add_no_evaluation(tmp_path, strategy):
    t = dict(max_steps=6, eval_steps=2, save_steps=2) if strategy == 'steps' else dict(max_steps=-1, epochs=2, save_steps=2)
    cfg = cfg_for(tmp_path, strategy, **t)
    cfg.data.eval_path, cfg.data.max_samples = 'toy:addition_test', 64       # 4 steps per epoch
    flag = threading.Event()
    first = ftnb.train(cfg, stop=flag, callbacks=[StopAt(3 if strategy == 'epoch' else 4, flag)])
    assert first.status == 'stopped'
    cfg.train.resume_from = 'latest'
    ftnb.train(cfg)
    assert _evals(cfg.run_dir) == ([2, 4, 6] if strategy == 'steps' else [4, 8])

class ScriptedEval(TrainerCallback):
    "Replace eval_loss by a scripted value before transformers picks the best checkpoint."
    LOSS = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 2.0, 6: 6.0}
    def on_evaluate(self, args, state, control, metrics=None, **kw): metrics['eval_loss'] = self.LOSS[state.global_step]

def test_rotation_keeps_newest_and_best(tmp_path):
    cfg = cfg_for(tmp_path, 'rot', eval_steps=1, save_steps=1, save_total_limit=2)
    cfg.data.eval_path = 'toy:addition_test'
    res = ftnb.train(cfg, callbacks=[ScriptedEval()])
    assert [p.name for p in runs.ckpt_dirs(res.run_dir)] == ['checkpoint-2', 'checkpoint-6']  # the best, and the newest
    assert os.readlink(res.run_dir/'best') == 'checkpoint-2' and runs.read_result(res.run_dir)['best'] == 'checkpoint-2'
    state = json.loads((res.run_dir/'checkpoint-6'/'trainer_state.json').read_text())
    assert state['best_model_checkpoint'] == str(res.run_dir/'checkpoint-2')  # its final path, not the .saving one

# ------------------------------------------------------------------------------------------------------- guards
class Poison(TrainerCallback):
    "After the checkpoint of step 3 is saved, put a NaN in the weights: step 4's loss is NaN."
    def __init__(self): self.model = None
    def on_train_begin(self, args, state, control, model=None, **kw): self.model = model
    def on_save(self, args, state, control, **kw):
        if state.global_step == 3:
            with torch.no_grad(): next(self.model.parameters()).fill_(float('nan'))

def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = cfg_for(tmp_path, 'nan', save_total_limit=None)
    with pytest.raises(runs.NonFiniteLoss, match='loss became nan at step 4.*last good checkpoint is checkpoint-3'):
        ftnb.train(cfg, callbacks=[Poison()])
    assert [p.name for p in runs.ckpt_dirs(cfg.run_dir)] == ['checkpoint-1', 'checkpoint-2', 'checkpoint-3']
    w = load_file(cfg.run_dir/'checkpoint-3'/'model.safetensors')
    assert all(torch.isfinite(v).all() for v in w.values())
    r = runs.read_result(cfg.run_dir)
    assert r['status'] == 'failed' and 'NonFiniteLoss' in r['error']

def test_nan_lora_weights_stop_the_next_step(tmp_path):
    "LoRA: a NaN in an A matrix stops the next step (by its loss, or its gradient norm where the loss stays finite)."
    class PoisonA(Poison):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 1:
                with torch.no_grad(): next(p for n, p in self.model.named_parameters() if 'lora_A' in n).fill_(float('nan'))
    cfg = cfg_for(tmp_path, 'nan-lora', save_total_limit=None)
    cfg.adapter.method, cfg.adapter.r = 'lora', 8
    with pytest.raises(runs.NonFiniteLoss, match='(loss|gradient norm) became nan at step 2.*last good checkpoint is checkpoint-1'):
        ftnb.train(cfg, callbacks=[PoisonA()])
    assert [p.name for p in runs.ckpt_dirs(cfg.run_dir)] == ['checkpoint-1']
    assert all(torch.isfinite(v).all() for v in load_file(cfg.run_dir/'checkpoint-1'/'adapter_model.safetensors').values())

def test_grpo_rewards_all_none_stop_the_run(tmp_path):
    p = tmp_path/'prompts.jsonl'                                      # conversations with no assistant turn: no reference answers
    p.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': f'{i}+{i}='}]}) + '\n' for i in range(16)))
    cfg = RunConfig.model_validate({'data': {'path': str(p)},
        'method': {'name': 'grpo', 'num_generations': 4, 'max_completion_length': 4, 'max_model_len': 64, 'rewards': [{'name': 'exact_answer'}]},
        'train': {'output_dir': str(tmp_path), 'run_name': 'none', 'max_steps': 3, 'batch_size': 8, 'logging_steps': 1}})
    with pytest.raises(ConfigError, match=r'every reward function \(exact_answer\) returned None or NaN.*a completion'):
        ftnb.train(cfg)
    r = runs.read_result(cfg.run_dir)
    assert r['status'] == 'failed' and 'exact_answer' in r['error'] and not runs.ckpt_dirs(cfg.run_dir)

def test_flat_loss_with_zero_gradient_warns(tmp_path):
    "GRPO where every completion gets the same reward: zero advantages, loss 0, gradient norm 0 -> one warning."
    from ftnb.rewards import REWARDS, register
    if 'same_for_all' not in REWARDS:
        @register('same_for_all')
        def same_for_all(completions, **kw): return [1.0] * len(completions)
    cfg = RunConfig.model_validate({'data': {'path': 'toy:addition', 'max_samples': 32},
        'method': {'name': 'grpo', 'num_generations': 4, 'max_completion_length': 2, 'max_model_len': 32, 'rewards': [{'name': 'same_for_all'}]},
        'train': {'output_dir': str(tmp_path), 'run_name': 'flat', 'max_steps': 11, 'batch_size': 4, 'logging_steps': 1, 'save_steps': 100}})
    with pytest.warns(UserWarning, match='zero gradient norm since step 2'): res = ftnb.train(cfg)
    assert res.status == 'finished'
    warns = [e for e in read_events(res.run_dir) if e.kind == 'Log' and e.level == 'warning' and 'zero gradient norm' in e.message]
    assert len(warns) == 1 and warns[0].step == 11  # steps 2..11 equal to the one before

def test_resume_from_another_runs_checkpoint_into_a_used_folder(tmp_path):
    "Starting from run a's checkpoint in folder b, which holds its own run: refused; with overwrite, b's run is moved aside."
    a = ftnb.train(cfg_for(tmp_path, 'a', max_steps=2, save_steps=2))
    b = cfg_for(tmp_path, 'b', max_steps=2, save_steps=2); ftnb.train(b)
    before = tree_hash(b.run_dir)
    b.train.resume_from, b.train.max_steps = str(a.run_dir/'checkpoint-2'), 3
    with pytest.raises(ConfigError, match='holds another run'): ftnb.train(b)
    assert tree_hash(b.run_dir) == before
    b.train.overwrite = True
    assert ftnb.train(b).step == 3
    old = [p for p in tmp_path.iterdir() if p.name.startswith('b.old-')]
    assert len(old) == 1 and tree_hash(old[0]) == before
