"""Several training processes from one config (ftnb.launch): two gloo processes on this CPU train the tiny model with DDP
and log the same per-step losses as one process with the same global batch; rank 0 alone writes the run folder."""
import json, os, sys
from pathlib import Path

import pytest
import torch

from ftnb import sft, train
from ftnb.config import ConfigError, RunConfig
from ftnb.events import read_events, read_jsonl

STEPS = 4

def cfg_for(tmp_path, name, batch_size, **train):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 200, 'eval_fraction': 0},
        'adapter': {'method': 'lora', 'dropout': 0.0},  # no dropout: each process draws its own dropout masks
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'batch_size': batch_size, 'lr': 2e-3, 'logging_steps': 1,
                  'max_steps': STEPS, 'save_steps': 2, 'seed': 0, **train}})

def losses(run_dir) -> list[float]:
    return [r['loss'] for r in read_jsonl(Path(run_dir)/'metrics.jsonl') if 'loss' in r]

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def audit(watch, log):
    """Note to the `log` file each write under `watch` that this process makes from now on. Python's audit hooks see
    ftnb's own writes (open for writing, mkdir, rename, remove, rmtree, symlink); torch.save writes through C++, so it
    is wrapped. A write in native code (safetensors) is not seen: the folder listing checks that."""
    watch, log = str(watch), str(log)
    def note(what, path):
        p = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else ''
        if isinstance(p, str) and os.path.abspath(p).startswith(watch):
            with open(log, 'a') as f: f.write(json.dumps([what, os.path.relpath(os.path.abspath(p), watch)]) + '\n')
    def hook(event, a):
        if event == 'open' and a[0] != log and ((isinstance(a[1], str) and set(a[1]) & set('wax+')) or (a[1] is None and a[2] & WRITE_FLAGS)): note('open', a[0])
        elif event in ('os.mkdir', 'os.remove', 'os.rmdir', 'shutil.rmtree', 'os.truncate'): note(event, a[0])
        elif event in ('os.rename', 'os.symlink'): note(event, a[1])
    sys.addaudithook(hook)
    save = torch.save
    def torch_save(obj, f, *a, **k): note('torch.save', f); return save(obj, f, *a, **k)
    torch.save = torch_save

@pytest.fixture(scope='module')
def two(tmp_path_factory):
    "The tiny model trained by two gloo processes with 4 samples each (global batch 8); rank 1's writes audited from its start."
    d = tmp_path_factory.mktemp('ddp'); log = d/'rank1-writes.jsonl'
    cfg = cfg_for(d, 'two', 4)
    real = sft.train
    def audited(*a, **k):  # runs in each forked process (ftnb.entry.train calls sft.train there), before the Run is made
        if os.environ['RANK'] != '0': audit(cfg.run_dir, log)
        return real(*a, **k)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sft, 'train', audited)
        res = train(cfg, nproc=2)
    return cfg, res, [tuple(json.loads(l)) for l in log.read_text().splitlines()] if log.exists() else []

def test_two_processes_log_the_loss_of_one_with_the_same_global_batch(tmp_path, two):
    cfg, res, _ = two
    one = train(cfg_for(tmp_path, 'one', 8))  # one process, 8 samples a step: the same global batch
    assert (res.status, res.step, res.model) == ('finished', STEPS, None)  # the model lived in the processes: final/ has it
    l2, l1 = losses(res.run_dir), losses(one.run_dir)
    assert len(l2) == len(l1) == STEPS  # rank 0 logged each step once
    # Same samples in each step: accelerate deals each process a batch of 4 in turn from one seeded order, so the two
    # batches of step k are the one-process batch of 8. What differs is float32 summation order (the gradient
    # all-reduce, rows padded in fours, not eights): 8e-8 relative measured over 4 steps. 1e-5 leaves that room to
    # grow over the steps and is still 1000x below the change that a different batch makes (below).
    assert l2 == pytest.approx(l1, rel=1e-5), (l2, l1)
    # Negative control: one process with 4 samples a step (global batch 4) logs other losses, beyond the tolerance.
    four = losses(train(cfg_for(tmp_path, 'four', 4)).run_dir)
    assert all(abs(a - b) > 1e-3 * abs(b) for a, b in zip(four[1:], l1[1:])), (four, l1)

def test_rank_0_alone_writes_the_run_folder(two):
    cfg, res, rank1 = two
    d = res.run_dir
    files = {str(p.relative_to(d)) for p in d.rglob('*') if p.is_file()}
    top = {f for f in files if '/' not in f}
    assert top == {'config.yaml', 'events.jsonl', 'metrics.jsonl', 'result.json', 'README.md'}, top
    for ck in ('checkpoint-2', 'checkpoint-4'):  # per-process RNG state from each rank (transformers' resume), no rng_state.pth
        assert {f'{ck}/rng_state_0.pth', f'{ck}/rng_state_1.pth', f'{ck}/ftnb_run.json', f'{ck}/adapter_model.safetensors'} <= files
        assert f'{ck}/rng_state.pth' not in files and json.loads((d/ck/'ftnb_run.json').read_text())['nproc'] == 2
    assert not any(p.name.startswith('.') for p in d.rglob('*'))  # no .saving, .final.tmp left behind
    kinds = [e.kind for e in read_events(d)]
    assert (kinds.count('RunStart'), kinds.count('RunEnd')) == (1, 1), kinds  # events from one process
    r = json.loads((d/'result.json').read_text())
    assert r['status'] == 'finished' and r['pid'] != os.getpid()  # claimed by rank 0's process, not by this one
    # Rank 1 wrote only its RNG state into the checkpoint being saved (and made that folder if it got there first).
    allowed = {('torch.save', f'.saving/checkpoint-{s}/rng_state_1.pth') for s in (2, 4)} | {('os.mkdir', f'.saving/checkpoint-{s}') for s in (2, 4)}
    assert rank1 and set(rank1) <= allowed, set(rank1) - allowed  # `rank1`: the audit saw rank 1's writes at all
    assert ('torch.save', '.saving/checkpoint-4/rng_state_1.pth') in rank1

def test_a_second_run_into_the_folder_is_refused_before_any_process_starts(two):
    cfg, res, _ = two
    before = sorted((str(p), p.stat().st_mtime_ns) for p in res.run_dir.rglob('*'))
    with pytest.raises(ConfigError, match='holds another run'): train(cfg, nproc=2)
    assert sorted((str(p), p.stat().st_mtime_ns) for p in res.run_dir.rglob('*')) == before

def test_resume_on_one_process_from_two(two, tmp_path):
    "A DDP checkpoint holds the whole model and optimizer: one process resumes it, and the log says the global batch changed."
    cfg, res, _ = two
    import shutil
    d = tmp_path/'two'; shutil.copytree(res.run_dir, d)
    c = cfg.model_copy(update={'train': cfg.train.model_copy(update={'output_dir': str(tmp_path), 'resume_from': 'latest', 'max_steps': STEPS + 2})})
    r = train(c)
    assert (r.status, r.step) == ('finished', STEPS + 2)
    msgs = [e.message for e in read_events(d) if e.kind == 'Log']
    assert any('resumed on 1 process(es) from a checkpoint saved on 2: the global batch is now 4 samples (it was 8)' in m for m in msgs), msgs

def test_bad_process_counts_name_the_field_and_the_fix(tmp_path):
    cfg = cfg_for(tmp_path, 'bad', 4)
    for bad in (0, -2):
        with pytest.raises(ConfigError, match=rf'nproc={bad}: not a process count. Fix: use a whole number'): train(cfg, nproc=bad)
    grpo = RunConfig.model_validate({**cfg.model_dump(), 'method': {'name': 'grpo', 'num_generations': 4}})
    with pytest.raises(ConfigError, match='nproc=2: GRPO'): train(grpo, nproc=2)
    fsdp = RunConfig.model_validate({**cfg.model_dump(), 'adapter': {'method': 'full'}, 'accel': {'fsdp': True}})
    with pytest.raises(ConfigError, match='accel.fsdp=True: accelerate applies FSDP2 on GPUs only'): train(fsdp, nproc=2)  # CPU: it would run DDP
    assert not cfg.run_dir.exists()
