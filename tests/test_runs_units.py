"""Fast unit tests of ftnb.runs: no model is loaded or trained, nothing leaves the machine. Exact values and exact messages,
so that a changed word, a flipped comparison or a dropped branch fails a test (the mutation run of .ci/mutation.py uses
this file for ftnb/runs.py; tests/test_runs.py kills real training processes and is far too slow to run per mutant)."""
import json, os, signal, socket, subprocess, sys, threading, time, warnings
from pathlib import Path
from types import SimpleNamespace

import pytest, torch, yaml
from torch import nn
from safetensors.torch import load_model, save_file, save_model
from transformers import TrainerCallback, TrainerControl, TrainerState
from transformers.trainer_utils import rotate_checkpoints

from ftnb import runs
from ftnb.config import ConfigError, RunConfig, to_dict
from ftnb.events import Bus, EventCallback, EventQueue, Log, RunEnd, read_events, read_jsonl

HOST = socket.gethostname()

def cfg_for(tmp_path, name='r', **train) -> RunConfig:
    return RunConfig.model_validate({'model': {'dtype': 'float32'}, 'adapter': {'method': 'full'},
                                     'train': {'output_dir': str(tmp_path), 'run_name': name, 'lr': 1e-4, **train}})

def msg(e) -> str: return str(e.value)

def ckpt(d:Path, step:int, run_id:str|None='a', weights:str|None='model.safetensors', state:str|None='{}') -> Path:
    "A checkpoint-N folder: trainer state, weights and ftnb_run.json as given (None leaves one out)."
    p = Path(d)/f'checkpoint-{step}'; p.mkdir(parents=True)
    if state is not None: (p/'trainer_state.json').write_text(state)
    if weights is not None: (p/weights).write_bytes(b'w')
    if run_id is not None: (p/'ftnb_run.json').write_text(json.dumps({'run_id': run_id, 'step': step, 'config': {}}))
    return p

def names(ps) -> list[str]: return [p.name for p in ps]

def rows(d:Path, n:int, name='metrics.jsonl'):
    (d/name).write_text(''.join(json.dumps({'step': i, 'loss': 1.0}) + '\n' for i in range(1, n + 1)))

def running(d:Path, **kw):
    d.mkdir(parents=True, exist_ok=True)
    runs.write_json(d/'result.json', {'status': 'running', 'pid': os.getpid(), 'host': HOST, **kw})

@pytest.fixture
def child():
    "A live child process (`sleep 30`), killed and reaped after the test."
    def dfl():  # default handlers, whatever this process was started under (nohup ignores SIGHUP, and a child inherits that)
        for sig in runs.STOP_SIGNALS: signal.signal(sig, signal.SIG_DFL)
    p = subprocess.Popen(['sleep', '30'], preexec_fn=dfl)
    yield p
    p.kill(); p.wait()

def wait_zombie(pid:int):
    for _ in range(500):
        if Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z': return
        time.sleep(0.01)
    raise AssertionError(f'{pid} never became a zombie')

# ------------------------------------------------------------------------------------------------- trainer_kwargs
def test_trainer_kwargs_every_field(tmp_path):
    cfg = RunConfig.model_validate({'model': {'dtype': 'float32'}, 'adapter': {'method': 'full'}, 'accel': {'liger': True, 'gradient_checkpointing': True},
        'train': {'output_dir': str(tmp_path), 'run_name': 'kw', 'epochs': 3.5, 'max_steps': 17, 'batch_size': 3, 'grad_accum': 5,
                  'lr': 3e-4, 'lr_scheduler': 'cosine', 'warmup_ratio': 0.25, 'weight_decay': 0.07, 'max_grad_norm': 0.6,
                  'logging_steps': 4, 'eval_steps': 6, 'save_steps': 9, 'save_total_limit': 4, 'seed': 123}})
    want = dict(output_dir=str(tmp_path/'kw'), num_train_epochs=3.5, max_steps=17, per_device_train_batch_size=3, per_device_eval_batch_size=3,
                gradient_accumulation_steps=5, learning_rate=3e-4, lr_scheduler_type='cosine', warmup_steps=0.25, weight_decay=0.07,
                max_grad_norm=0.6, logging_steps=4, logging_first_step=True, eval_strategy='no', eval_steps=6, metric_for_best_model=None,
                save_strategy='steps', save_steps=9, save_total_limit=4, seed=123, data_seed=123, report_to='none', use_cpu=True,
                dataloader_num_workers=0, bf16=False, fp16=False, **{runs.CKPT: True}, use_liger_kernel=True,
                optim='adamw_torch_fused', torch_compile=False, torch_compile_backend=None, torch_compile_mode=None)  # one process: no fsdp keys
    assert not torch.cuda.is_available()
    assert runs.trainer_kwargs(cfg) == want                                  # has_eval defaults to False
    assert runs.trainer_kwargs(cfg, has_eval=True) == {**want, 'eval_strategy': 'steps', 'metric_for_best_model': 'eval_loss'}
    cfg.train.eval_steps = None
    assert runs.trainer_kwargs(cfg, True) == {**want, 'eval_strategy': 'epoch', 'eval_steps': None, 'metric_for_best_model': 'eval_loss'}
    assert runs.trainer_kwargs(cfg, False) == {**want, 'eval_strategy': 'no', 'eval_steps': None}
    cfg.accel.liger, cfg.accel.gradient_checkpointing = False, False
    k = runs.trainer_kwargs(cfg)
    assert (k['use_liger_kernel'], k[runs.CKPT]) == (False, False)

@pytest.mark.parametrize('dtype,bf16,fp16', [('bfloat16', True, False), ('float16', False, True), ('float32', False, False)])
def test_trainer_kwargs_precision_on_a_gpu(tmp_path, monkeypatch, dtype, bf16, fp16):
    "With CUDA (faked): bf16/fp16 follow model.dtype, use_cpu is off, and gradient checkpointing 'auto' is on for GRPO."
    cfg = cfg_for(tmp_path); cfg.model.dtype = dtype
    for d in ('bfloat16', 'float16', 'float32'):  # on this CPU machine: never mixed precision, whatever the dtype
        cfg.model.dtype = d; k = runs.trainer_kwargs(cfg)
        assert (k['use_cpu'], k['bf16'], k['fp16']) == (True, False, False)
    cfg.model.dtype = dtype
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    k = runs.trainer_kwargs(cfg)
    assert (k['use_cpu'], k['bf16'], k['fp16'], k[runs.CKPT]) == (False, bf16, fp16, False)
    g = RunConfig.model_validate({'model': {'dtype': dtype}, 'method': {'name': 'grpo', 'num_generations': 2},
                                  'train': {'output_dir': str(tmp_path), 'batch_size': 2}})
    assert runs.trainer_kwargs(g)[runs.CKPT] is True

# -------------------------------------------------------------------------------------------- write_json, read_result
def test_write_json_atomic_with_indent(tmp_path, monkeypatch):
    p, d = tmp_path/'x.json', {'a': 1, 'b': [1, 2], 'c': {'d': None}}
    seen, replace = [], os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: (seen.append((Path(a), Path(b))), replace(a, b)))
    runs.write_json(p, {'old': True}); runs.write_json(str(p), d)          # a str path too; the second replaces the first
    assert p.read_text() == json.dumps(d, indent=2)
    assert seen == [(tmp_path/'.x.json.tmp', p)] * 2                       # written beside it, then renamed over it
    assert sorted(os.listdir(tmp_path)) == ['x.json']                       # no temporary file left

def test_read_result(tmp_path):
    assert runs.read_result(tmp_path) == {} and runs.read_result(tmp_path/'missing') == {}
    (tmp_path/'result.json').write_text('{"status": "runn')                # cut off mid-write by an older version
    assert runs.read_result(tmp_path) == {}
    (tmp_path/'result.json').write_text('{"status": "finished", "step": 3}')
    assert runs.read_result(str(tmp_path)) == {'status': 'finished', 'step': 3}
    (tmp_path/'d').mkdir(); (tmp_path/'d'/'result.json').mkdir()          # unreadable: a folder
    assert runs.read_result(tmp_path/'d') == {}
    assert runs.STATUSES == ('running', 'finished', 'stopped', 'failed', 'killed')

# --------------------------------------------------------------------------------------------- _proc_start, status
def field22(pid) -> int:
    s = Path(f'/proc/{pid}/stat').read_text()
    return int(s[s.rindex(')') + 2:].split(' ')[19])                       # proc(5): field 22 is starttime

def test_proc_start(tmp_path, monkeypatch):
    me = runs._proc_start(os.getpid())
    assert type(me) is int and me == field22(os.getpid()) and me > 0
    assert runs._proc_start(2**31 - 1) is None                              # no such process
    exe = tmp_path/'a) b c d'                                              # a name with ')' and spaces: parsed from the last ')'
    exe.write_bytes(Path('/bin/sleep').read_bytes()); exe.chmod(0o755)
    p = subprocess.Popen([str(exe), '30'])
    try:
        for _ in range(500):
            if 'a) b c d' in Path(f'/proc/{p.pid}/stat').read_text(): break
            time.sleep(0.01)
        assert runs._proc_start(p.pid) == field22(p.pid) >= me
        p.kill(); wait_zombie(p.pid)
        assert runs._proc_start(p.pid) == -1                                # a zombie
    finally: p.kill(); p.wait()
    class Garbled:                                                          # a stat line without ')': unknown, not an error
        def __init__(self, p): pass
        def read_text(self): return 'garbled'
    monkeypatch.setattr(runs, 'Path', Garbled)
    assert runs._proc_start(os.getpid()) is None

def test_status_without_result_and_finished(tmp_path):
    assert runs.status(tmp_path) is None and runs.status(tmp_path/'missing') is None
    runs.write_json(tmp_path/'result.json', {'status': 'finished', 'pid': 2**31 - 1, 'host': HOST})
    assert runs.status(tmp_path) == 'finished'                              # not checked against the process: only `running` is
    runs.write_json(tmp_path/'result.json', {'pid': os.getpid(), 'host': HOST})
    assert runs.status(tmp_path) is None

def test_status_of_this_process(tmp_path, monkeypatch):
    d = tmp_path/'run'; running(d)
    monkeypatch.setattr(runs, '_ACTIVE', set())
    assert runs.status(d) == 'killed'                                       # our pid, but not training this folder (a crashed cell)
    runs._ACTIVE.add(str(d.resolve()))
    assert runs.status(d) == 'running'
    (tmp_path/'link').symlink_to(d)                                         # compared by the resolved path
    assert runs.status(tmp_path/'link') == 'running'
    runs._ACTIVE.clear(); runs._ACTIVE.add(str(tmp_path/'other'))
    assert runs.status(d) == 'killed'

def test_status_another_host_or_no_pid(tmp_path):
    runs.write_json(tmp_path/'result.json', {'status': 'running', 'pid': 2**31 - 1, 'host': 'elsewhere'})
    assert runs.status(tmp_path) == 'running'                               # cannot be checked from here: assume it lives
    runs.write_json(tmp_path/'result.json', {'status': 'running', 'pid': 2**31 - 1})
    assert runs.status(tmp_path) == 'running'                               # no host either
    for pid in (None, 0):
        runs.write_json(tmp_path/'result.json', {'status': 'running', 'pid': pid, 'host': HOST})
        assert runs.status(tmp_path) == 'running'
    runs.write_json(tmp_path/'result.json', {'status': 'running', 'pid': 2**31 - 1, 'host': HOST})
    assert runs.status(tmp_path) == 'killed'                                # this host, no such process

def test_status_of_a_child_process(tmp_path, child):
    started = runs._proc_start(child.pid)
    running(tmp_path, pid=child.pid, pid_started=started)
    assert runs.status(tmp_path) == 'running'
    running(tmp_path, pid=child.pid, pid_started=started + 1)              # the pid was reused by another process
    assert runs.status(tmp_path) == 'killed'
    running(tmp_path, pid=child.pid, pid_started=None)                      # an older result.json: trust the pid
    assert runs.status(tmp_path) == 'running'
    running(tmp_path, pid=child.pid)
    assert runs.status(tmp_path) == 'running'
    child.kill(); wait_zombie(child.pid)                                    # killed, not yet reaped: a zombie
    assert runs.status(tmp_path) == 'killed'
    running(tmp_path, pid=child.pid, pid_started=-1)                        # even if the zombie's -1 were recorded
    assert runs.status(tmp_path) == 'killed'
    child.wait()
    running(tmp_path, pid=child.pid, pid_started=started)
    assert runs.status(tmp_path) == 'killed'                                # reaped: no such process

def test_status_when_the_process_cannot_be_checked(tmp_path, child, monkeypatch):
    running(tmp_path, pid=child.pid, pid_started=12345)
    assert runs.status(tmp_path) == 'killed'
    monkeypatch.setattr(runs, '_proc_start', lambda pid: None)             # /proc unreadable: start unknown
    assert runs.status(tmp_path) == 'running'
    def denied(pid, sig): raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(os, 'kill', denied)                                 # another user's process
    running(tmp_path, pid=child.pid, pid_started=12345)
    assert runs.status(tmp_path) == 'running'

# ------------------------------------------------------------------------------------------------------ checkpoints
def test_step():
    assert [runs._step(Path(n)) for n in ('checkpoint-12', 'checkpoint-0', 'x/checkpoint-7', 'checkpoint', 'checkpoint-x',
                                          'checkpoint-1-2', 'checkpoint-')] == [12, 0, 7, -1, -1, -1, -1]

def test_ckpt_dirs(tmp_path):
    assert runs.ckpt_dirs(tmp_path/'missing') == []
    (tmp_path/'file').write_text('x'); assert runs.ckpt_dirs(tmp_path/'file') == []
    for n in ('checkpoint-10', 'checkpoint-9', 'checkpoint-0', 'checkpoint-x', 'checkpoint', 'other-3'): (tmp_path/n).mkdir()
    (tmp_path/'checkpoint-5').write_text('a file')
    assert runs.ckpt_dirs(tmp_path) == [tmp_path/'checkpoint-0', tmp_path/'checkpoint-9', tmp_path/'checkpoint-10']
    assert runs.ckpt_dirs(str(tmp_path)) == runs.ckpt_dirs(tmp_path)

def test_complete(tmp_path):
    assert runs.WEIGHTS == ('model.safetensors', 'adapter_model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'adapter_model.bin')
    assert not runs.complete(tmp_path/'missing')
    assert not runs.complete(ckpt(tmp_path, 1, state=None))                 # no trainer state
    assert not runs.complete(ckpt(tmp_path, 2, state='{"global_st'))        # cut off
    assert not runs.complete(ckpt(tmp_path, 3, weights=None))               # no weights
    assert not runs.complete(ckpt(tmp_path, 4, weights='model.bin'))        # not a weights file
    p = ckpt(tmp_path, 5, state=None); (p/'trainer_state.json').mkdir()
    assert not runs.complete(p)
    for i, w in enumerate(runs.WEIGHTS): assert runs.complete(ckpt(tmp_path, 10 + i, weights=w)), w
    assert runs.complete(str(tmp_path/'checkpoint-10'))

def test_latest_checkpoint(tmp_path):
    assert runs.latest_checkpoint(tmp_path/'missing') is None
    ckpt(tmp_path, 1, weights=None)
    assert runs.latest_checkpoint(tmp_path) is None
    for s in (2, 9, 10): ckpt(tmp_path, s)
    ckpt(tmp_path, 11, weights=None)
    assert runs.latest_checkpoint(tmp_path) == tmp_path/'checkpoint-10'     # 10 after 9, and 11 passed over

# ---------------------------------------------------------------------------------------------- describe, holds_run
def test_describe(tmp_path):
    assert runs.describe(tmp_path/'missing') == 'nothing' and runs.describe(tmp_path) == 'nothing'
    a = tmp_path/'a'; a.mkdir(); runs.write_json(a/'result.json', {'status': 'failed'})
    assert runs.describe(a) == 'status failed'
    b = tmp_path/'b'; b.mkdir(); (b/'metrics.jsonl').write_text('{"step": 1}\n{"step": 2}\n{"step": 3')  # a half last row
    assert runs.describe(b) == '2 metric rows'
    c = tmp_path/'c'; ckpt(c, 10); ckpt(c, 9, weights=None)
    assert runs.describe(c) == 'checkpoints checkpoint-9, checkpoint-10'
    e = tmp_path/'e'; (e/'final').mkdir(parents=True)
    assert runs.describe(e) == 'final weights'
    f = tmp_path/'f'; (f/'metrics.jsonl').parent.mkdir(); (f/'metrics.jsonl').write_text('')
    assert runs.describe(f) == 'nothing'
    rows(a, 3); ckpt(a, 2); ckpt(a, 4); (a/'final').mkdir()
    assert runs.describe(str(a)) == 'status failed, 3 metric rows, checkpoints checkpoint-2, checkpoint-4, final weights'

def test_holds_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, '_ACTIVE', set())
    assert not runs.holds_run(tmp_path/'missing')
    (tmp_path/'file').write_text('x'); assert not runs.holds_run(tmp_path/'file')
    def new(n):
        d = tmp_path/n; d.mkdir(); return d
    assert not runs.holds_run(new('empty'))
    d = new('ck'); ckpt(d, 1, weights=None); assert runs.holds_run(d)      # even a cut-off checkpoint
    d = new('m'); rows(d, 1); assert runs.holds_run(d)
    d = new('m0'); (d/'metrics.jsonl').write_text(''); assert not runs.holds_run(d)
    d = new('fin'); (d/'final').mkdir(); assert runs.holds_run(str(d))
    d = new('live'); running(d); runs._ACTIVE.add(str(d.resolve())); assert runs.holds_run(d)
    for s in ('finished', 'failed', 'stopped'):
        d = new(s); runs.write_json(d/'result.json', {'status': s}); assert not runs.holds_run(d)
    d = new('dead'); running(d, pid=2**31 - 1); assert not runs.holds_run(d)  # killed before it got anywhere

# -------------------------------------------------------------------------------------------------- check_output_dir
def test_check_output_dir(tmp_path, monkeypatch):
    assert runs.check_output_dir(cfg_for(tmp_path/'new'/'deeper', 'r')) is None and not (tmp_path/'new').exists()
    (tmp_path/'r').write_text('x')
    with pytest.raises(ConfigError) as e: runs.check_output_dir(cfg_for(tmp_path, 'r'))
    assert (e.value.field, e.value.value) == ('train.run_name', 'r')
    assert msg(e) == f"train.run_name='r': {tmp_path}/r is a file, not a folder. Fix: give a folder (or a path that does not exist yet)"
    (tmp_path/'f').write_text('x')
    for out in (tmp_path/'f', tmp_path/'f'/'sub'):
        with pytest.raises(ConfigError) as e: runs.check_output_dir(cfg_for(out, 'r'))
        assert (e.value.field, e.value.value) == ('train.output_dir', str(out))
        assert msg(e) == f"train.output_dir={str(out)!r}: {tmp_path}/f is a file, not a folder. Fix: give a folder (or a path that does not exist yet)"
    asked = []
    monkeypatch.setattr(os, 'access', lambda p, m: asked.append((Path(p), m)) or False)  # root writes anywhere: the answer is faked
    with pytest.raises(ConfigError) as e: runs.check_output_dir(cfg_for(tmp_path/'new'/'deeper', 'r'))
    assert asked == [(tmp_path, os.W_OK)]                                   # the nearest folder that exists
    assert msg(e) == f"train.output_dir={str(tmp_path/'new'/'deeper')!r}: {tmp_path} cannot be written (read-only). Fix: choose a folder you can write to"

@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_check_output_dir_read_only(tmp_path):
    (tmp_path/'ro').mkdir(); (tmp_path/'ro').chmod(0o500)
    try:
        with pytest.raises(ConfigError, match='cannot be written'): runs.check_output_dir(cfg_for(tmp_path/'ro', 'x'))
    finally: (tmp_path/'ro').chmod(0o700)

# -------------------------------------------------------------------------------------- saved_config, config_diff
def test_saved_config(tmp_path):
    c = tmp_path/'checkpoint-1'; c.mkdir()
    assert runs.saved_config(c) == {}
    (tmp_path/'config.yaml').write_text('')                                 # empty YAML: None
    assert runs.saved_config(c) == {}
    (tmp_path/'config.yaml').write_text('a: [1')                            # broken YAML
    assert runs.saved_config(c) == {}
    (tmp_path/'config.yaml').write_text('adapter: {r: 4}\n')
    assert runs.saved_config(str(c)) == {'adapter': {'r': 4}}               # the run folder's config
    for bad in ('{"config": {"adapter"', '{"run_id": "x"}'):                # unreadable, or no config in it
        (c/'ftnb_run.json').write_text(bad); assert runs.saved_config(c) == {'adapter': {'r': 4}}
    (c/'ftnb_run.json').write_text('{"config": {"adapter": {"r": 8}}}')
    assert runs.saved_config(c) == {'adapter': {'r': 8}}                    # the checkpoint's own first

def test_get():
    d = {'a': {'b': {'c': 1}, 'x': 2}}
    assert (runs._get(d, 'a.b.c'), runs._get(d, 'a.x'), runs._get(d, 'a.b'), runs._get(d, 'a.z'), runs._get(d, 'a.x.y'), runs._get(d, 'q.r')) == \
           (1, 2, {'c': 1}, None, None, None)

def test_config_diff(tmp_path):
    cfg = cfg_for(tmp_path)
    assert runs.MUST_MATCH == ('model.name_or_path', 'model.revision', 'method.name', 'adapter.method', 'adapter.r', 'adapter.alpha',
                               'adapter.target_modules', 'adapter.use_rslora', 'adapter.modules_to_save', 'adapter.alora_invocation')
    saved = to_dict(cfg)
    assert runs.config_diff(cfg, saved) == [] and runs.config_diff(cfg, {}) == []
    saved['adapter'].update(r=8, target_modules=['q_proj']); saved['model']['name_or_path'] = 'tiny-llama'
    saved['train']['lr'] = 1.0                                               # not in MUST_MATCH
    assert runs.config_diff(cfg, saved) == ["model.name_or_path: checkpoint 'tiny-llama', config 'tiny-qwen2'", 'adapter.r: checkpoint 8, config 16',
                                            "adapter.target_modules: checkpoint ['q_proj'], config ['all-linear']"]
    del saved['model']                                                       # a part the saved config lacks is not compared
    assert runs.config_diff(cfg, saved) == ['adapter.r: checkpoint 8, config 16', "adapter.target_modules: checkpoint ['q_proj'], config ['all-linear']"]
    assert runs.config_diff(cfg, {'adapter': {'method': 'full'}}) == ['adapter.r: checkpoint None, config 16', 'adapter.alpha: checkpoint None, config 32',
        "adapter.target_modules: checkpoint None, config ['all-linear']", 'adapter.use_rslora: checkpoint None, config False',
        'adapter.modules_to_save: checkpoint None, config []']

# -------------------------------------------------------------------------------------------------- resume_checkpoint
def test_resume_checkpoint(tmp_path):
    cfg = cfg_for(tmp_path); d = cfg.run_dir
    assert runs.resume_checkpoint(cfg) is None
    cfg.train.resume_from = 'latest'
    with pytest.raises(ConfigError) as e: runs.resume_checkpoint(cfg)
    assert (e.value.field, e.value.value) == ('train.resume_from', 'latest')
    assert msg(e) == f"train.resume_from='latest': no checkpoint in {d}. Fix: train once first, or set it to None"
    ckpt(d, 3, weights=None); ckpt(d, 1, state=None)
    with pytest.raises(ConfigError) as e: runs.resume_checkpoint(cfg)
    assert msg(e) == (f"train.resume_from='latest': no complete checkpoint in {d} (checkpoint-1, checkpoint-3: cut off while saving). "
                      "Fix: train once first, or set it to None")
    cfg.train.resume_from = str(d/'checkpoint-3')
    with pytest.raises(ConfigError) as e: runs.resume_checkpoint(cfg)
    assert msg(e) == f"train.resume_from='{d}/checkpoint-3': not a complete checkpoint folder. Fix: give a checkpoint-N folder of a run, or 'latest'"
    good = ckpt(d, 2, run_id=None)
    (good/'ftnb_run.json').write_text(json.dumps({'run_id': 'a', 'config': {**to_dict(cfg), 'adapter': {**to_dict(cfg)['adapter'], 'r': 8, 'alpha': 4}}}))
    for r in ('latest', str(good)):
        cfg.train.resume_from = r
        with pytest.raises(ConfigError) as e: runs.resume_checkpoint(cfg)
        assert msg(e) == (f"train.resume_from={r!r}: {good} does not fit this config: adapter.r: checkpoint 8, config 16; adapter.alpha: checkpoint 4, "
                          "config 32. Fix: set these back to the values the checkpoint was trained with, or start a new run (a new train.run_name) with the new ones")
    cfg.adapter.r, cfg.adapter.alpha = 8, 4
    assert runs.resume_checkpoint(cfg) == good
    cfg.train.resume_from = 'latest'
    assert runs.resume_checkpoint(cfg) == good

# ------------------------------------------------------------------------------------------------------ check_shapes
def test_check_shapes(tmp_path):
    torch.manual_seed(0)
    save_model(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), str(tmp_path/'model.safetensors'))
    assert runs.check_shapes(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), tmp_path) is None
    with pytest.raises(ConfigError) as e: runs.check_shapes(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)), str(tmp_path))
    assert (e.value.field, e.value.value) == ('train.resume_from', str(tmp_path))
    assert msg(e) == (f"train.resume_from={str(tmp_path)!r}: 3 saved weights do not fit the model, e.g. 0.bias: checkpoint [3], model [5]. "
                      "Fix: resume with the model and adapter the checkpoint was trained with, or start a new run")
    with pytest.raises(ConfigError) as e: runs.check_shapes(nn.Sequential(nn.Linear(4, 3)), tmp_path)
    assert msg(e).split(': ', 1)[1] == ("2 saved weights do not fit the model, e.g. 1.bias: checkpoint [2], model missing. "
                                        "Fix: resume with the model and adapter the checkpoint was trained with, or start a new run")
    assert runs.check_shapes(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 2)), tmp_path) is None  # extra weights are fine
    assert runs.check_shapes(nn.Linear(9, 9), tmp_path/'missing') is None   # no weights file: nothing to compare

class Tiny(nn.Module):
    def __init__(self, n=6):
        super().__init__(); self.lin = nn.Linear(n, n)
    def forward(self, x): return self.lin(x)

def test_check_shapes_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    lora = lambda r: get_peft_model(Tiny(), LoraConfig(r=r, lora_alpha=r, target_modules=['lin']))
    lora(4).save_pretrained(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['README.md', 'adapter_config.json', 'adapter_model.safetensors']
    save_model(nn.Linear(1, 1), str(tmp_path/'model.safetensors'))          # the adapter file is the one compared
    assert runs.check_shapes(lora(4), tmp_path) is None
    with pytest.raises(ConfigError) as e: runs.check_shapes(lora(2), tmp_path)
    assert msg(e).split(': ', 1)[1] == ("2 saved weights do not fit the model, e.g. base_model.model.lin.lora_A.weight: checkpoint [4, 6], model [2, 6]. "
                                        "Fix: resume with the model and adapter the checkpoint was trained with, or start a new run")

# ------------------------------------------------------------------------------------------------------ signals_stop
@pytest.fixture
def handlers():
    "Restore the stop signals' handlers after a test that changes them."
    before = {s: signal.getsignal(s) for s in runs.STOP_SIGNALS}
    yield before
    for s, h in before.items(): signal.signal(s, h)

def test_stop_signals():
    assert runs.STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

def test_signals_stop_off_the_main_thread(handlers):
    flag, seen = threading.Event(), []
    def body():
        with runs.signals_stop(flag): seen.append({s: signal.getsignal(s) for s in runs.STOP_SIGNALS})
    t = threading.Thread(target=body); t.start(); t.join()
    assert seen == [handlers]                                               # the body ran, with nothing installed

@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason='signal handlers need the main thread')
def test_signals_stop_installs_and_restores(handlers, capsys):
    mine = lambda s, f: None
    signal.signal(signal.SIGINT, mine); signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_IGN)
    flag = threading.Event()
    with runs.signals_stop(flag):
        h = signal.getsignal(signal.SIGTERM)
        assert callable(h) and h not in (mine, signal.SIG_DFL) and signal.getsignal(signal.SIGINT) is h
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN           # ignored (nohup): stays ignored
        h(signal.SIGTERM, None)
        assert flag.is_set()
        assert capsys.readouterr().err == '\nftnb: SIGTERM: stopping after this step and saving a checkpoint (send it again to end at once)\n'
        with pytest.raises(KeyboardInterrupt) as e: h(signal.SIGINT, None)
        assert str(e.value) == 'a second SIGINT: ended at once, without a checkpoint'
        assert capsys.readouterr().err == ''
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == (mine, signal.SIG_DFL, signal.SIG_IGN)
    flag = threading.Event()
    with pytest.raises(ValueError):                                         # restored when the body raises, too
        with runs.signals_stop(flag):
            os.kill(os.getpid(), signal.SIGTERM)                            # a real signal, on this (main) thread
            for _ in range(100):
                if flag.is_set(): break
                time.sleep(0.01)
            assert flag.is_set() and 'ftnb: SIGTERM: stopping' in capsys.readouterr().err
            raise ValueError
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is mine

@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason='signal handlers need the main thread')
def test_signals_stop_restores_a_handler_python_did_not_set(handlers, monkeypatch):
    "signal.getsignal gives None for a handler not installed from Python: SIG_DFL is put back then."
    mine = lambda s, f: None
    signal.signal(signal.SIGHUP, mine)
    get = signal.getsignal
    monkeypatch.setattr(signal, 'getsignal', lambda s: None if s == signal.SIGHUP else get(s))
    with runs.signals_stop(threading.Event()): assert get(signal.SIGHUP) is not mine
    assert get(signal.SIGHUP) is signal.SIG_DFL

# ------------------------------------------------------------------------------------------------- rotation, publish
def test_rotate(tmp_path):
    d = tmp_path
    ours = [ckpt(d, s) for s in (1, 2, 3, 4, 5)]
    other, cut, bare = ckpt(d, 6, run_id='b'), ckpt(d, 7, weights=None), ckpt(d, 8, run_id=None)
    (d/'checkpoint-9').mkdir(); (d/'checkpoint-9'/'trainer_state.json').write_text('{}'); (d/'checkpoint-9'/'model.safetensors').write_text('')
    (d/'checkpoint-9'/'ftnb_run.json').write_text('{"run_id": ')            # unreadable: not ours
    left = lambda: names(runs.ckpt_dirs(d))
    for limit in (None, 0): assert runs.rotate(d, limit, 'a') == [] and len(left()) == 9
    assert runs.rotate(d, 7, 'a') == [] and len(left()) == 9
    assert runs.rotate(d, 4, 'a') == ours[:1]
    assert runs.rotate(str(d), 3, 'a', keep=[None, d/'checkpoint-2']) == [ours[2]]  # the kept one counts towards the limit
    assert left() == ['checkpoint-2', 'checkpoint-4', 'checkpoint-5', 'checkpoint-6', 'checkpoint-7', 'checkpoint-8', 'checkpoint-9']
    (d/'best').symlink_to('checkpoint-2')
    assert runs.rotate(d, 1, 'a', keep=[d/'best']) == [ours[3]]             # limit 1 with a best: the best and the newest stay
    assert left() == ['checkpoint-2', 'checkpoint-5', 'checkpoint-6', 'checkpoint-7', 'checkpoint-8', 'checkpoint-9']
    assert runs.rotate(d, 1, 'a', keep=[d/'checkpoint-6']) == [ours[1]]     # a kept checkpoint of another run is not ours to count
    assert runs.rotate(d, 1, 'b') == [] and runs.rotate(d, 1, 'zzz') == []
    assert left() == ['checkpoint-5', 'checkpoint-6', 'checkpoint-7', 'checkpoint-8', 'checkpoint-9']

def test_delete_goes_through_an_aside_name(tmp_path, monkeypatch):
    "A rotated checkpoint is renamed out of the checkpoint-* names before it is deleted: a kill inside the delete leaves no emptied checkpoint-N."
    p, seen = ckpt(tmp_path, 3), []
    stale = tmp_path/'.deleting-checkpoint-3'; stale.mkdir(); (stale/'x').write_text('left by an earlier kill')
    orig = runs.shutil.rmtree
    monkeypatch.setattr(runs.shutil, 'rmtree', lambda q, *a, **k: seen.append((Path(q).name, p.exists())) or orig(q, *a, **k))
    runs._delete(p)
    # the stale aside goes first (checkpoint-3 still whole), then checkpoint-3 is deleted only once renamed: never under its own name
    assert seen == [('.deleting-checkpoint-3', True), ('.deleting-checkpoint-3', False)]
    assert sorted(x.name for x in tmp_path.iterdir()) == []

def test_claim_removes_an_aside_left_by_a_kill(tmp_path):
    "A kill inside a rotation's delete leaves `.deleting-checkpoint-N`; the next claim of the folder removes it."
    cfg = cfg_for(tmp_path)
    aside = cfg.run_dir/'.deleting-checkpoint-2'; aside.mkdir(parents=True); (aside/'optimizer.pt').write_bytes(b'o')
    with runs.Run(cfg): pass
    assert not aside.exists() and (cfg.run_dir/'result.json').exists()

def test_rotate_keeps_up_to_the_limit(tmp_path):
    for s in range(1, 7): ckpt(tmp_path, s)
    assert names(runs.rotate(tmp_path, 3, 'a', keep=[tmp_path/'checkpoint-1'])) == ['checkpoint-2', 'checkpoint-3', 'checkpoint-4']
    assert names(runs.ckpt_dirs(tmp_path)) == ['checkpoint-1', 'checkpoint-5', 'checkpoint-6']

def test_run_id(tmp_path):
    assert runs._run_id(ckpt(tmp_path, 1, run_id='xyz')) == 'xyz'
    assert runs._run_id(ckpt(tmp_path, 2, run_id=None)) is None
    (tmp_path/'checkpoint-2'/'ftnb_run.json').write_text('{"step": 2}'); assert runs._run_id(tmp_path/'checkpoint-2') is None
    (tmp_path/'checkpoint-2'/'ftnb_run.json').write_text('{"run'); assert runs._run_id(tmp_path/'checkpoint-2') is None

def test_link_best(tmp_path):
    runs._link_best(tmp_path, None); runs._link_best(tmp_path, tmp_path/'checkpoint-3')
    assert os.listdir(tmp_path) == []
    a, b = ckpt(tmp_path, 1), ckpt(tmp_path, 2)
    runs._link_best(tmp_path, a)
    assert os.readlink(tmp_path/'best') == 'checkpoint-1'                   # relative: the run folder can be moved
    (tmp_path/'.best.tmp').symlink_to('gone')                               # left by a kill: a dangling link
    runs._link_best(tmp_path, b)
    assert os.readlink(tmp_path/'best') == 'checkpoint-2' and not (tmp_path/'.best.tmp').is_symlink()
    (tmp_path/'.best.tmp').write_text('x')
    runs._link_best(tmp_path, a)
    assert os.readlink(tmp_path/'best') == 'checkpoint-1' and sorted(os.listdir(tmp_path)) == ['best', 'checkpoint-1', 'checkpoint-2']
    runs._link_best(tmp_path, tmp_path/'checkpoint-7')                      # gone: the old link stays
    assert os.readlink(tmp_path/'best') == 'checkpoint-1'

def test_publish(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(runs, '_fsync_tree', lambda d: synced.append(('tree', d)))
    fs = runs._fsync; monkeypatch.setattr(runs, '_fsync', lambda p: (synced.append(('one', p)), fs(p)))
    t = tmp_path/'.saving'/'checkpoint-3'; t.mkdir(parents=True); (t/'w').write_text('new')
    runs._publish(t, tmp_path/'checkpoint-3')
    assert synced == [('tree', t), ('one', tmp_path)]
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-3'] and (tmp_path/'checkpoint-3'/'w').read_text() == 'new'
    t.mkdir(parents=True); (t/'w').write_text('newer'); (t/'x').write_text('')
    runs._publish(t, tmp_path/'checkpoint-3')                               # the same step again (after a resume): replaced
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-3'] and sorted(os.listdir(tmp_path/'checkpoint-3')) == ['w', 'x']
    assert (tmp_path/'checkpoint-3'/'w').read_text() == 'newer'

def test_fsync(tmp_path, monkeypatch):
    (tmp_path/'s').mkdir(); (tmp_path/'s'/'f').write_text('x'); (tmp_path/'g').write_text('y')
    seen = []
    monkeypatch.setattr(runs, '_fsync', seen.append)
    runs._fsync_tree(tmp_path)
    assert sorted(seen[:-1]) == [tmp_path/'g', tmp_path/'s', tmp_path/'s'/'f'] and seen[-1] == tmp_path and len(seen) == 4
    monkeypatch.undo()
    fds, closed, fsync, close = [], [], os.fsync, os.close
    monkeypatch.setattr(os, 'fsync', lambda fd: (fds.append(fd), fsync(fd)))
    monkeypatch.setattr(os, 'close', lambda fd: (closed.append(fd), close(fd)))
    runs._fsync(tmp_path/'g'); runs._fsync(tmp_path)
    assert len(fds) == 2 and closed == fds
    runs._fsync(tmp_path/'missing')                                         # best effort: no error
    def fail(fd): raise OSError(22, 'EINVAL')
    monkeypatch.setattr(os, 'fsync', fail)
    runs._fsync(tmp_path/'g')
    assert len(closed) == 3                                                 # closed even when the flush fails

def test_fix_state(tmp_path):
    (tmp_path/'trainer_state.json').write_text(json.dumps({'global_step': 4, 'best_model_checkpoint': '/x/.saving/checkpoint-4'}))
    runs._fix_state(tmp_path, '/x/checkpoint-4')
    assert (tmp_path/'trainer_state.json').read_text() == json.dumps({'global_step': 4, 'best_model_checkpoint': '/x/checkpoint-4'}, indent=2)
    runs._fix_state(tmp_path, None)
    assert json.loads((tmp_path/'trainer_state.json').read_text()) == {'global_step': 4, 'best_model_checkpoint': None}

# ------------------------------------------------------------------------------------------------------- FakeTrainer
class FakeTrainer:
    """Just enough of transformers.Trainer (5.x, trainer.py) for ftnb.runs, with the real TrainerState and TrainerControl.
    `train` follows `_inner_training_loop`'s order per step: `training_step` per micro-batch, then `_get_grad_norm`, the
    optimizer step (here: every weight += 1, so a checkpoint's weights tell its step), `global_step += 1`, `on_step_end`,
    then `_maybe_log_save_evaluate`: log (a `log_history` row with `step`, `on_log` without it), evaluate (a new best
    eval_loss sets `best_metric` and `best_global_step`, as `_determine_best_metric`), save when `save_steps` divides the
    step or a callback asked (`control.should_save`), then `on_save`. `_save_checkpoint` follows Trainer's: the folder is
    `checkpoint-{global_step}` under `self._get_output_dir(trial=trial)`, `save_model(..., _internal_call=True)` writes the
    weights, `best_model_checkpoint` is set when the best step's folder exists under that same run dir, optimizer files,
    `state.save_to_json(trainer_state.json)`, then transformers' own `rotate_checkpoints` with `args.save_total_limit`.
    A resume reads the checkpoint's trainer_state.json and weights, as `train(resume_from_checkpoint=...)` does."""
    def __init__(self, run_dir, max_steps=4, save_steps=2, limit=2, callbacks=(), losses=None, norms=None, evals=None, model=None, tok=None):
        self.args = SimpleNamespace(output_dir=str(run_dir), save_total_limit=limit, save_steps=save_steps, logging_steps=1, max_steps=max_steps)
        self.state, self.control = TrainerState(), TrainerControl()
        torch.manual_seed(0); self.model = model if model is not None else nn.Linear(2, 1)
        self.processing_class, self.callbacks = tok, list(callbacks)
        # Trainer.callback_handler: its list of callbacks and remove_callback (ftnb.runs.console_off uses both)
        self.callback_handler = SimpleNamespace(callbacks=self.callbacks, remove_callback=self.callbacks.remove)
        self.losses, self.norms, self.evals = losses or {}, norms or {}, evals or {}
        self.limits_seen, self.signal_handler, self.saved_with = [], None, []

    def add_callback(self, cb): self.callbacks.append(cb)
    def _cb(self, event, **kw):
        for cb in self.callbacks:
            r = getattr(cb, event)(self.args, self.state, self.control, model=self.model, **kw)
            if r is not None: self.control = r

    def _get_output_dir(self, trial): return self.args.output_dir
    def save_model(self, output_dir=None, _internal_call=False):
        os.makedirs(output_dir, exist_ok=True)
        if hasattr(self.model, 'peft_config'): self.model.save_pretrained(output_dir)  # Trainer.save_model: a PeftModel saves its adapter
        else: save_model(self.model, os.path.join(output_dir, 'model.safetensors'))
    def _save_checkpoint(self, model, trial):
        self.saved_with.append((model, trial))
        run_dir = self._get_output_dir(trial=trial)
        out = os.path.join(run_dir, f'checkpoint-{self.state.global_step}')
        self.save_model(out, _internal_call=True)
        if self.state.best_global_step:
            best = os.path.join(run_dir, f'checkpoint-{self.state.best_global_step}')
            if os.path.exists(best): self.state.best_model_checkpoint = best
        torch.save({}, os.path.join(out, 'optimizer.pt'))
        self.state.save_to_json(os.path.join(out, 'trainer_state.json'))
        self.limits_seen.append(self.args.save_total_limit)
        rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def training_step(self, model, inputs, num_items_in_batch=None):
        return torch.tensor(self.losses.get(self.state.global_step + 1, 1.0 / (self.state.global_step + 1)))
    def _get_grad_norm(self, model, grad_norm=None):
        return torch.tensor(self.norms.get(self.state.global_step + 1, 0.5))

    def train(self, resume_from_checkpoint=None):
        self.signal_handler = signal.getsignal(signal.SIGTERM)
        if resume_from_checkpoint is not None:
            self.state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, 'trainer_state.json'))
            if (Path(resume_from_checkpoint)/'model.safetensors').exists(): load_model(self.model, os.path.join(resume_from_checkpoint, 'model.safetensors'))
        self.state.max_steps = self.args.max_steps
        self._cb('on_train_begin')
        while self.state.global_step < self.args.max_steps:
            loss = self.training_step(self.model, {})
            grad_norm = self._get_grad_norm(self.model, grad_norm=None)
            with torch.no_grad():
                for p in self.model.parameters(): p += 1
            self.state.global_step += 1; s = self.state.global_step
            self.state.epoch = s / self.args.max_steps
            self._cb('on_step_end')
            logs = {'loss': round(loss.item(), 4), 'grad_norm': float(grad_norm), 'learning_rate': 0.001, 'epoch': self.state.epoch}
            self.state.log_history.append({**logs, 'step': s}); self._cb('on_log', logs=logs)
            if s in self.evals:
                self.state.log_history.append({'eval_loss': self.evals[s], 'epoch': self.state.epoch, 'step': s})
                if self.state.best_metric is None or self.evals[s] < self.state.best_metric:
                    self.state.best_metric, self.state.best_global_step = self.evals[s], s
            if s % self.args.save_steps == 0 or self.control.should_save:
                self._save_checkpoint(self.model, trial=None); self.control.should_save = False
                self._cb('on_save')
            if self.control.should_training_stop: break
        self._cb('on_epoch_end'); self._cb('on_train_end')

def weight(p) -> float:
    from safetensors.torch import load_file
    return float(load_file(str(Path(p)/'model.safetensors'))['bias'])

def _bias0() -> float:
    with torch.random.fork_rng():
        torch.manual_seed(0); return nn.Linear(2, 1).bias.item()
BIAS0 = _bias0()  # FakeTrainer's model before its first step

def test_atomic_saves(tmp_path):
    d = tmp_path/'run'; d.mkdir()
    t = FakeTrainer(d, max_steps=6, save_steps=1, limit=2, evals={1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 2.0, 6: 6.0})
    published = []
    pub = runs._publish
    def spy(tmp, dst):  # what is renamed into place is whole: trainer state fixed, ftnb_run.json written
        assert tmp == d/'.saving'/dst.name and runs.complete(tmp) and (tmp/'ftnb_run.json').exists() and not dst.exists()
        published.append(dst.name); pub(tmp, dst)
    orig = t._save_checkpoint
    runs.atomic_saves(t, 'rid', {'k': 1})
    assert t._save_checkpoint is not orig
    runs._publish = spy
    try: t.train()
    finally: runs._publish = pub
    assert published == [f'checkpoint-{s}' for s in range(1, 7)]
    assert t.saved_with == [(t.model, None)] * 6                            # the wrapped save gets the model and trial it was given
    assert t.limits_seen == [None] * 6 and t.args.save_total_limit == 2     # transformers' rotation off during the save only
    assert t._get_output_dir(trial=None) == str(d)                          # the redirect into .saving is undone
    assert sorted(os.listdir(d)) == ['best', 'checkpoint-2', 'checkpoint-6']  # the best and the newest; no .saving left
    assert os.readlink(d/'best') == 'checkpoint-2'
    for s in (2, 6):
        assert json.loads((d/f'checkpoint-{s}'/'ftnb_run.json').read_text()) == {'run_id': 'rid', 'step': s, 'config': {'k': 1}, 'nproc': 1}
        assert weight(d/f'checkpoint-{s}') == pytest.approx(BIAS0 + s)
    state = json.loads((d/'checkpoint-6'/'trainer_state.json').read_text())
    assert state['best_model_checkpoint'] == str(d/'checkpoint-2') == t.state.best_model_checkpoint and state['global_step'] == 6
    assert json.loads((d/'checkpoint-2'/'trainer_state.json').read_text())['best_model_checkpoint'] == str(d/'checkpoint-2')

def test_atomic_saves_without_eval_or_limit(tmp_path):
    t = FakeTrainer(tmp_path, max_steps=5, save_steps=2, limit=None)
    runs.atomic_saves(t, 'x', {}); t.train()
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-2', 'checkpoint-4']  # no best link, nothing rotated
    assert t.limits_seen == [None, None] and t.state.best_model_checkpoint is None
    assert json.loads((tmp_path/'checkpoint-4'/'trainer_state.json').read_text())['best_model_checkpoint'] is None

def test_atomic_saves_best_rotated_away_elsewhere(tmp_path):
    "A best step whose folder is gone (deleted by hand) is not named as best, and the link is not moved to it."
    t = FakeTrainer(tmp_path, max_steps=4, save_steps=1, limit=None, evals={1: 1.0})
    runs.atomic_saves(t, 'x', {})
    t.train()
    assert os.readlink(tmp_path/'best') == 'checkpoint-1'
    import shutil; shutil.rmtree(tmp_path/'checkpoint-1')
    t.args.max_steps = 5; t.train()
    assert t.state.best_model_checkpoint is None
    assert json.loads((tmp_path/'checkpoint-5'/'trainer_state.json').read_text())['best_model_checkpoint'] is None
    assert os.readlink(tmp_path/'best') == 'checkpoint-1'                   # dangling, not replaced by a wrong one

def test_atomic_saves_passes_the_trial_on(tmp_path):
    t = FakeTrainer(tmp_path); runs.atomic_saves(t, 'x', {})
    m, trial = nn.Linear(1, 1), {'lr': 1.0}                                 # a hyperparameter search's trial
    t.state.global_step = 3; t._save_checkpoint(m, trial)
    assert t.saved_with == [(m, trial)] and names(runs.ckpt_dirs(tmp_path)) == ['checkpoint-3']

def test_atomic_saves_into_a_folder_not_made_yet(tmp_path):
    t = FakeTrainer(tmp_path/'a'/'b', max_steps=1, save_steps=1)
    runs.atomic_saves(t, 'x', {}); t.train()
    assert sorted(os.listdir(tmp_path/'a'/'b')) == ['checkpoint-1']

def test_atomic_saves_clears_a_stale_saving_folder(tmp_path):
    (tmp_path/'.saving'/'checkpoint-9').mkdir(parents=True); (tmp_path/'.saving'/'junk').write_text('x')
    t = FakeTrainer(tmp_path, max_steps=1, save_steps=1, limit=1)
    runs.atomic_saves(t, 'x', {}); t.train()
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-1']

# ------------------------------------------------------------------------------------------------------- guard_finite
def nonfinite(what, v, step, last) -> str:
    return (f"train.lr=0.001: the training {what} became {v} at step {step}; the run stopped before the optimizer step, and the last good "
            f"checkpoint is {last}. Fix: lower train.lr (or check the batch: a sample with no trained tokens), then resume with train.resume_from='latest'")

def test_guard_finite_loss(tmp_path):
    t = FakeTrainer(tmp_path, max_steps=6, save_steps=2, losses={5: float('nan')})
    runs.atomic_saves(t, 'x', {}); assert runs.guard_finite(t, 1e-3) is t
    with pytest.raises(runs.NonFiniteLoss) as e: t.train()
    assert isinstance(e.value, ConfigError) and msg(e) == nonfinite('loss', 'nan', 5, 'checkpoint-4')
    assert t.state.global_step == 4 and names(runs.ckpt_dirs(tmp_path)) == ['checkpoint-2', 'checkpoint-4']

@pytest.mark.parametrize('v,shown', [(float('inf'), 'inf'), (float('-inf'), '-inf'), (float('nan'), 'nan')])
def test_guard_finite_grad_norm(tmp_path, v, shown):
    t = FakeTrainer(tmp_path, max_steps=3, norms={1: v})
    runs.guard_finite(t, 1e-3)
    with pytest.raises(runs.NonFiniteLoss) as e: t.train()
    assert msg(e) == nonfinite('gradient norm', shown, 1, 'none')

def test_guard_finite_passes_finite_values_through(tmp_path):
    t = FakeTrainer(tmp_path); l, g = torch.tensor(0.25), torch.tensor(3.0)
    t.training_step, t._get_grad_norm = (lambda *a, **k: l), (lambda *a, **k: g)
    runs.guard_finite(t, 1e-3)
    assert t.training_step(t.model, {}, 4) is l and t._get_grad_norm(t.model, grad_norm=None) is g
    t._get_grad_norm = lambda *a, **k: 2.5                                  # a float, as some trainers return
    runs.guard_finite(t, 1e-3); assert t._get_grad_norm(t.model) == 2.5
    t.training_step = lambda *a, **k: torch.tensor(float('-inf'))
    runs.guard_finite(t, 1e-3)
    with pytest.raises(runs.NonFiniteLoss, match='the training loss became -inf at step 1;'): t.training_step(t.model, {})
    args = []
    t.training_step = lambda *a, **k: args.append((a, k)) or l              # arguments go through unchanged
    runs.guard_finite(t, 1e-3); t.training_step(1, 2, num_items_in_batch=3)
    assert args == [((1, 2), {'num_items_in_batch': 3})]
    t._get_grad_norm = lambda *a, **k: args.append((a, k)) or g
    runs.guard_finite(t, 1e-3); t._get_grad_norm(4, grad_norm=5)
    assert args[1:] == [((4,), {'grad_norm': 5})]

# ------------------------------------------------------------------------------------------------------------ Health
def log_seq(h, seq, start=1):
    st, ctl = TrainerState(), TrainerControl()
    for i, logs in enumerate(seq, start): st.global_step = i; h.on_log(None, st, ctl, logs=logs)

def test_health_warns_once_on_a_flat_loss(tmp_path):
    got = []; bus = Bus(got.append); h = runs.Health(bus, EventCallback(bus), steps=3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        log_seq(h, [{'loss': 2.0, 'grad_norm': 0.0}, {'loss': 2.0, 'grad_norm': 0.0}, {'loss': 2.0, 'grad_norm': 0}])
        assert got == [] and not h.warned
        log_seq(h, [{'loss': 2.0, 'grad_norm': 0.0}, {'loss': 2.0, 'grad_norm': 0.0}], start=4)
    text = ('the loss has stayed 2.0 with a zero gradient norm since step 2: nothing is learned '
            '(GRPO: every completion of a group gets the same reward; SFT: no trained tokens, or a frozen model)')
    assert [(e.kind, e.step, e.level, e.message) for e in got] == [('Log', 4, 'warning', text)]
    assert [(x.category, str(x.message)) for x in w] == [(UserWarning, f'ftnb: {text}')]

def test_health_resets_when_the_loss_moves(tmp_path):
    got = []; bus = Bus(got.append); h = runs.Health(bus, EventCallback(bus), steps=2)
    z = lambda l, g=0.0: {'loss': l, 'grad_norm': g}
    log_seq(h, [z(1.0), z(2.0), z(3.0), z(3.0, 0.1), z(3.0, 0.2), z(4.0), None, {}, {'loss': 4.0}, {'grad_norm': 0.0}])
    assert got == [] and h.flat is None and h.last == 4.0                   # missing loss or grad_norm: the log is skipped
    log_seq(h, [z(4.0)], start=11)
    assert got == [] and h.flat == 11                                       # the flat run starts at 11: not yet 2 steps
    with pytest.warns(UserWarning, match='stayed 4.0 with a zero gradient norm since step 11'): log_seq(h, [z(4.0)], start=12)
    assert [e.step for e in got] == [12]

def test_health_flat_run_survives_eval_logs():
    got = []; bus = Bus(got.append); h = runs.Health(bus, EventCallback(bus), steps=3)
    assert runs.Health(bus, EventCallback(bus)).steps == 10 and (h.flat, h.last, h.warned) == (None, None, False)
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); log_seq(h, [{'loss': 1.0, 'grad_norm': 0}, {'loss': 1.0, 'grad_norm': 0},
                                                                               {'eval_loss': 3.0}, {'loss': 1.0, 'grad_norm': 0}])
    assert [e.step for e in got] == [4] and h.flat == 2

def test_health_on_epoch_end():
    bus = Bus(); ev = EventCallback(bus); h = runs.Health(bus, ev)
    c = TrainerControl(); c.should_evaluate = True
    h.on_epoch_end(None, TrainerState(), c); assert c.should_evaluate is True
    ev.stopped = True
    h.on_epoch_end(None, TrainerState(), c); assert c.should_evaluate is False

# --------------------------------------------------------------------------------------------- RunResult, move_aside
def test_run_result_defaults():
    r = runs.RunResult(Path('x'), 'finished', 3)
    assert (r.metrics, r.model, r.tokenizer, r.trainer) == ({}, None, None, None)
    assert repr(r) == "RunResult(run_dir=PosixPath('x'), status='finished', step=3, metrics={})"
    assert runs.RunResult(Path('y'), 'stopped', 1).metrics is not r.metrics

def test_move_aside(tmp_path, monkeypatch):
    d = tmp_path/'r'; d.mkdir(); (d/'f').write_text('keep')
    before = time.strftime('%Y%m%d-%H%M%S')
    new = runs.move_aside(d)
    after = time.strftime('%Y%m%d-%H%M%S')
    assert new.parent == tmp_path and new.name in (f'r.old-{before}', f'r.old-{after}') and (new/'f').read_text() == 'keep' and not d.exists()
    fmts = []
    monkeypatch.setattr(time, 'strftime', lambda f: fmts.append(f) or '20260102-030405')
    for want in ('r.old-20260102-030405', 'r.old-20260102-030405-2', 'r.old-20260102-030405-3'):
        d.mkdir(); (d/'f').write_text(want)
        assert runs.move_aside(str(d)) == tmp_path/want and (tmp_path/want/'f').read_text() == want
    assert set(fmts) == {'%Y%m%d-%H%M%S'}
    assert len(os.listdir(tmp_path)) == 4                                   # nothing deleted

# ------------------------------------------------------------------------------------------------------------- Run
@pytest.fixture
def active(monkeypatch):
    monkeypatch.setattr(runs, '_ACTIVE', set()); return runs._ACTIVE

def train_run(cfg, *, max_steps=4, save_steps=2, limit=2, callbacks=(), **kw):
    with runs.Run(cfg) as r:
        t = FakeTrainer(cfg.run_dir, max_steps=max_steps, save_steps=save_steps, limit=limit, callbacks=[*callbacks, *r.callbacks], **kw)
        res = r.fit(t)
    return r, t, res

def test_run_init(tmp_path, active):
    cfg = cfg_for(tmp_path); q = EventQueue(); stop = threading.Event()
    r = runs.Run(cfg, q, stop)
    assert (r.cfg, r.dir, r.stop, r.resume, r.move_old, r.claimed, r.result, r.pending, r.log_) == (cfg, cfg.run_dir, stop, None, False, False, None, [], None)
    assert [type(c) for c in r.callbacks] == [runs.Health, EventCallback] and r.callbacks[1] is r.events
    assert r.callbacks[0].bus is r.bus and r.callbacks[0].events is r.events and r.events.stop is stop and r.events.bus is r.bus
    assert r.events.config == cfg.model_dump(mode='json') and r.callbacks[0].steps == 10
    r.log('hello', level='warning', step=3)
    assert not cfg.run_dir.exists()                                         # nothing written before the claim
    assert [(e.kind, e.message, e.level, e.step) for e in r.pending] == [('Log', 'hello', 'warning', 3)]
    assert [e.message for e in q.drain()] == ['hello']
    assert isinstance(runs.Run(cfg).stop, threading.Event)
    cfg.data.chat_template_kwargs = {'pair': (1, 2)}                       # the RunStart event carries JSON data: a tuple becomes a list
    assert runs.Run(cfg).events.config['data']['chat_template_kwargs'] == {'pair': [1, 2]} and to_dict(cfg)['data']['chat_template_kwargs']['pair'] == [1, 2]
    assert type(runs.Run(cfg).events.config['data']['chat_template_kwargs']['pair']) is list

def test_run_end_to_end(tmp_path, active):
    cfg = cfg_for(tmp_path)
    with runs.Run(cfg) as r:
        assert r.claimed and active == {str(cfg.run_dir.resolve())} and runs.status(cfg.run_dir) == 'running'
        r.log('before fit')
        (cfg.run_dir/'.final.tmp').mkdir(); (cfg.run_dir/'.final.tmp'/'stale.bin').write_text('x')  # left by a kill during the last save
        tok = object()
        t = FakeTrainer(cfg.run_dir, max_steps=5, save_steps=2, limit=1, callbacks=r.callbacks, tok=tok)
        t0 = time.time(); res = r.fit(t)
    assert active == set()
    d = cfg.run_dir; out = runs.read_result(d)
    metrics = {'loss': 0.2, 'grad_norm': 0.5, 'learning_rate': 0.001, 'epoch': 1.0, 'step': 5}
    assert {k: out[k] for k in ('status', 'step', 'metrics', 'pid', 'host', 'pid_started')} == \
           {'status': 'finished', 'step': 5, 'metrics': metrics, 'pid': os.getpid(), 'host': HOST, 'pid_started': runs._proc_start(os.getpid())}
    assert len(out['run_id']) == 12 and int(out['run_id'], 16) >= 0 and t0 <= out['ended'] <= time.time() and out['started'] <= t0
    assert set(out) == {'status', 'run_id', 'pid', 'host', 'pid_started', 'started', 'step', 'metrics', 'ended'}  # no 'best' without eval
    assert (res.run_dir, res.status, res.step, res.metrics, res.model, res.tokenizer, res.trainer) == (d, 'finished', 5, metrics, t.model, tok, t)
    assert yaml.safe_load((d/'config.yaml').read_text()) == to_dict(cfg)
    assert sorted(os.listdir(d/'final')) == ['README.md', 'model.safetensors'] and weight(d/'final') == pytest.approx(BIAS0 + 5)
    assert '| steps | 5 (finished) |' in (d/'final'/'README.md').read_text() and '| steps | 5 (finished) |' in (d/'README.md').read_text()
    assert sorted(os.listdir(d)) == ['README.md', 'checkpoint-4', 'config.yaml', 'events.jsonl', 'final', 'metrics.jsonl', 'result.json']
    assert json.loads((d/'checkpoint-4'/'ftnb_run.json').read_text()) == {'run_id': out['run_id'], 'step': 4, 'config': to_dict(cfg), 'nproc': 1}
    assert [m['step'] for m in read_jsonl(d/'metrics.jsonl')] == [1, 2, 3, 4, 5]
    ev = read_events(d)
    assert [e.kind for e in ev] == ['Log', 'RunStart', *['Metrics'] * 2, 'Checkpoint', *['Metrics'] * 2, 'Checkpoint', 'Metrics', 'RunEnd']
    assert ev[0].message == 'before fit' and (ev[-1].status, ev[-1].step, ev[-1].error) == ('finished', 5, None)
    if threading.current_thread() is threading.main_thread():              # trained inside signals_stop, restored after
        assert t.signal_handler is not signal.getsignal(signal.SIGTERM) and callable(t.signal_handler)

def test_run_stop_and_resume(tmp_path, active):
    cfg = cfg_for(tmp_path)
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3: r.stop.set()
    with runs.Run(cfg) as r:
        t = FakeTrainer(cfg.run_dir, max_steps=8, save_steps=2, limit=None, callbacks=[StopAt(), *r.callbacks])
        res = r.fit(t)
    d = cfg.run_dir; first = runs.read_result(d)
    assert (res.status, res.step, first['status'], first['step']) == ('stopped', 3, 'stopped', 3) and r.events.stopped
    assert names(runs.ckpt_dirs(d)) == ['checkpoint-2', 'checkpoint-3'] and read_events(d)[-1].status == 'stopped'
    assert '| steps | 3 (stopped) |' in (d/'final'/'README.md').read_text() and '| steps | 3 (stopped) |' in (d/'README.md').read_text()
    # a later process: rows after step 3 are dropped when it resumes (they are logged again); a kill cut its rotation short
    with open(d/'metrics.jsonl', 'a') as f: f.write(json.dumps({'step': 4, 'loss': 9.0}) + '\n')
    (d/'timeline.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in [{'step': 2}, {'step': 3}, {'step': 4}, {'phases': []}]))
    cfg.train.resume_from, cfg.train.save_total_limit = 'latest', 1
    r2 = runs.Run(cfg)
    assert r2.resume == d/'checkpoint-3' and not r2.move_old
    with r2:
        assert not r2.claimed and runs.read_result(d) == first             # resuming: claimed only after the shape check
        t2 = FakeTrainer(d, max_steps=6, save_steps=2, limit=1, callbacks=r2.callbacks)
        res2 = r2.fit(t2)
    out = runs.read_result(d)
    assert (out['status'], out['step'], out['run_id'], res2.step) == ('finished', 6, first['run_id'], 6)
    assert [m['step'] for m in read_jsonl(d/'metrics.jsonl')] == [1, 2, 3, 4, 5, 6] and read_jsonl(d/'metrics.jsonl')[3]['loss'] == 0.25
    assert read_jsonl(d/'timeline.jsonl') == [{'step': 2}, {'step': 3}, {'phases': []}]
    assert names(runs.ckpt_dirs(d)) == ['checkpoint-6'] and weight(d/'final') == pytest.approx(BIAS0 + 6)
    assert sorted(os.listdir(d)) == ['README.md', 'checkpoint-6', 'config.yaml', 'events.jsonl', 'final', 'metrics.jsonl', 'result.json', 'timeline.jsonl']
    assert [e.step for e in read_events(d) if e.kind == 'RunStart'] == [0, 3]

def test_resume_rotates_before_training(tmp_path, active):
    "A kill between a save and its rotation leaves one checkpoint too many: the resume rotates first."
    cfg = cfg_for(tmp_path); train_run(cfg, max_steps=6, save_steps=2, limit=None)
    d = cfg.run_dir
    assert names(runs.ckpt_dirs(d)) == ['checkpoint-2', 'checkpoint-4', 'checkpoint-6']
    cfg.train.resume_from, cfg.train.save_total_limit = 'latest', 2
    seen = []
    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw): seen.append(names(runs.ckpt_dirs(d)))
    with runs.Run(cfg) as r: r.fit(FakeTrainer(d, max_steps=6, save_steps=2, limit=2, callbacks=[Look(), *r.callbacks]))
    assert seen == [['checkpoint-4', 'checkpoint-6']]

def test_resume_keeps_the_best_when_rotating(tmp_path, active):
    cfg = cfg_for(tmp_path); train_run(cfg, max_steps=6, save_steps=2, limit=None, evals={2: 1.0, 4: 2.0, 6: 3.0})
    d = cfg.run_dir; assert os.readlink(d/'best') == 'checkpoint-2'
    cfg.train.resume_from, cfg.train.save_total_limit = 'latest', 1
    with runs.Run(cfg) as r: r.fit(FakeTrainer(d, max_steps=6, limit=1, callbacks=r.callbacks))
    assert names(runs.ckpt_dirs(d)) == ['checkpoint-2', 'checkpoint-6'] and runs.read_result(d)['best'] == 'checkpoint-2'

def test_resume_checks_shapes_before_the_claim(tmp_path, active):
    cfg = cfg_for(tmp_path); train_run(cfg)
    before = runs.read_result(cfg.run_dir)
    cfg.train.resume_from = 'latest'
    with pytest.raises(ConfigError, match='saved weights do not fit the model'):
        with runs.Run(cfg) as r:
            t = FakeTrainer(cfg.run_dir, callbacks=r.callbacks); t.model = nn.Linear(3, 1); r.fit(t)
    assert runs.read_result(cfg.run_dir) == before and not r.claimed       # an exit before the claim writes nothing

def test_run_exit_with_an_exception(tmp_path, active):
    cfg = cfg_for(tmp_path)
    with pytest.raises(ValueError, match='boom'):
        with runs.Run(cfg) as r: raise ValueError('boom')
    out = runs.read_result(cfg.run_dir)
    assert (out['status'], out['step'], out['error'], out['run_id']) == ('failed', 0, 'ValueError: boom', r.run_id) and out['ended'] >= out['started']
    assert set(out) == {'status', 'run_id', 'pid', 'host', 'pid_started', 'started', 'step', 'error', 'ended'} and active == set()
    ev = read_events(cfg.run_dir)[-1]
    assert (ev.kind, ev.status, ev.step, ev.error) == ('RunEnd', 'failed', 0, 'ValueError: boom')
    assert runs.status(cfg.run_dir) == 'failed'

def test_run_exit_killed_mid_fit(tmp_path, active):
    cfg = cfg_for(tmp_path)
    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3: raise KeyboardInterrupt('a second SIGINT: ended at once, without a checkpoint')
    with pytest.raises(KeyboardInterrupt):
        with runs.Run(cfg) as r: r.fit(FakeTrainer(cfg.run_dir, max_steps=6, callbacks=[Interrupt(), *r.callbacks]))
    out = runs.read_result(cfg.run_dir)
    assert (out['status'], out['step'], out['error']) == ('killed', 3, 'KeyboardInterrupt: a second SIGINT: ended at once, without a checkpoint')
    ev = read_events(cfg.run_dir)[-1]
    assert (ev.kind, ev.step, ev.status, ev.error) == ('RunEnd', 3, 'killed', out['error'])

def test_run_nan_fails_the_run(tmp_path, active):
    cfg = cfg_for(tmp_path)
    with pytest.raises(runs.NonFiniteLoss):
        with runs.Run(cfg) as r: r.fit(FakeTrainer(cfg.run_dir, max_steps=6, losses={3: float('inf')}, callbacks=r.callbacks))
    out = runs.read_result(cfg.run_dir)
    assert (out['status'], out['step']) == ('failed', 2)
    assert out['error'] == 'NonFiniteLoss: ' + nonfinite('loss', 'inf', 3, 'checkpoint-2').replace('train.lr=0.001', 'train.lr=0.0001')

def test_exit_before_the_claim_writes_nothing(tmp_path, active):
    cfg = cfg_for(tmp_path); train_run(cfg)
    d = cfg.run_dir; before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    cfg.train.resume_from = 'latest'
    r = runs.Run(cfg)
    active.add(str(d.resolve()))
    with pytest.raises(ValueError):
        with r: raise ValueError('before fit')
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before and active == set()

def test_check_owner_refuses_a_live_run(tmp_path, active, child):
    cfg = cfg_for(tmp_path); running(cfg.run_dir, pid=child.pid, pid_started=runs._proc_start(child.pid))
    ckpt(cfg.run_dir, 1)
    for resume in (None, 'latest'):
        cfg.train.resume_from = resume
        with pytest.raises(ConfigError) as e: runs.Run(cfg)
        assert msg(e) == (f"train.run_name='r': a run is in progress in {cfg.run_dir} (pid {child.pid}). "
                          "Fix: wait for it to end or stop it, or choose another train.run_name")

def test_check_owner_refuses_another_run(tmp_path, active):
    cfg = cfg_for(tmp_path); d = cfg.run_dir
    d.mkdir(); runs.write_json(d/'result.json', {'status': 'failed'})
    assert runs.Run(cfg).move_old is False                                 # a failed start that got nowhere: reused
    rows(d, 3)
    with pytest.raises(ConfigError) as e: runs.Run(cfg)
    assert msg(e) == (f"train.run_name='r': {d} holds another run (status failed, 3 metric rows). Fix: resume it with train.resume_from='latest', "
                      "choose a new train.run_name, or set train.overwrite=true (--set train.overwrite=true) to move the old run to r.old-<time>")
    other = ckpt(tmp_path/'other', 2)                                       # resuming another run's checkpoint into this folder
    cfg.train.resume_from = str(other)
    with pytest.raises(ConfigError, match='holds another run'): runs.Run(cfg)
    cfg.train.resume_from = None
    assert sorted(os.listdir(d)) == ['metrics.jsonl', 'result.json']
    cfg.train.overwrite = True
    r = runs.Run(cfg)
    assert r.move_old is True and sorted(os.listdir(tmp_path)) == ['other', 'r']  # moved at the claim, not before
    with r: pass
    old = [p for p in tmp_path.iterdir() if p.name.startswith('r.old-')]
    assert len(old) == 1 and sorted(os.listdir(old[0])) == ['metrics.jsonl', 'result.json']
    ev = read_events(d)
    assert (ev[0].kind, ev[0].message) == ('Log', f'moved the old run to {old[0]}')
    assert (ev[-1].kind, ev[-1].status) == ('RunEnd', 'running')
    assert not (d/'metrics.jsonl').exists()

def test_check_owner_own_checkpoint_resumes(tmp_path, active):
    cfg = cfg_for(tmp_path); train_run(cfg)
    cfg.train.resume_from = 'latest'
    assert runs.Run(cfg).move_old is False
    (tmp_path/'alias').symlink_to(tmp_path)
    cfg.train.resume_from = str(tmp_path/'alias'/'r'/'checkpoint-4')       # the same folder, spelled another way
    assert runs.Run(cfg).move_old is False

def test_claim_cleans_up_and_warns(tmp_path, active):
    cfg = cfg_for(tmp_path); d = cfg.run_dir; train_run(cfg)
    (d/'.saving'/'checkpoint-7').mkdir(parents=True); ckpt(d, 9, weights=None)  # left by a process killed while saving
    n = len(read_events(d)); cfg.train.resume_from = 'latest'
    with runs.Run(cfg) as r:
        r.log('first', step=1)
        assert r.pending == [Log(step=1, message='first', time=r.pending[0].time)] and (d/'.saving').exists()
        r.fit(FakeTrainer(d, max_steps=4, callbacks=r.callbacks))
    assert not (d/'.saving').exists() and r.pending == [] and r.claimed
    logs = [(e.level, e.message) for e in read_events(d)[n:] if e.kind == 'Log']
    assert logs == [('info', 'first'), ('warning', 'removed a half-written checkpoint (.saving) of an earlier process'),
                    ('warning', 'checkpoint-9 is incomplete (cut off while saving): a resume passes over it')]
    assert names(runs.ckpt_dirs(d)) == ['checkpoint-2', 'checkpoint-4', 'checkpoint-9']

def test_claim_permission_error(tmp_path, active, monkeypatch):
    cfg = cfg_for(tmp_path)
    def denied(c, p): raise PermissionError(13, 'Permission denied', str(p))
    monkeypatch.setattr(runs, 'save_config', denied)
    r = runs.Run(cfg)
    with pytest.raises(ConfigError) as e: r.__enter__()
    assert msg(e) == f"train.output_dir={str(tmp_path)!r}: {cfg.run_dir}/config.yaml cannot be written. Fix: choose a folder you can write to"
    assert e.value.__cause__ is None and e.value.__suppress_context__ and not r.claimed and active == set() and r.log_ is None

def test_truncate(tmp_path, monkeypatch):
    seen, replace = [], os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: (seen.append((Path(a).name, Path(b).name)), replace(a, b)))
    (tmp_path/'metrics.jsonl').write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"loss": 1}\n{"step": 0}\n{"step": nul')
    runs._truncate(tmp_path, 2)
    assert (tmp_path/'metrics.jsonl').read_text() == '{"step": 1}\n{"step": 2}\n{"loss": 1}\n{"step": 0}\n'
    assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl']                # no timeline created, no temporary file left
    assert seen == [('.metrics.jsonl.tmp', 'metrics.jsonl')]                # written whole beside it, then renamed over it
    runs._truncate(tmp_path, 0)
    assert read_jsonl(tmp_path/'metrics.jsonl') == [{'loss': 1}, {'step': 0}]

def test_new_run_in_a_reused_folder_gets_a_new_id(tmp_path, active):
    "A failed start left result.json (with its run_id): a new run there has its own id; its output folder is made as needed."
    cfg = cfg_for(tmp_path/'x'/'y'); d = cfg.run_dir
    with pytest.raises(ValueError):
        with runs.Run(cfg): raise ValueError('typo')
    first = runs.read_result(d)['run_id']
    with runs.Run(cfg) as r: pass
    assert r.run_id != first and len(r.run_id) == 12 and runs.read_result(d)['run_id'] == r.run_id

def test_fit_hands_the_trainer_to_accel(tmp_path, active, monkeypatch):
    "accel.prepare gets the trainer before training; accel.finish gets it with the final weights' folder, still the temporary one."
    seen = []
    monkeypatch.setattr(runs.accel, 'prepare', lambda t, c: seen.append(('prepare', t, c, t.state.global_step)) or [])
    monkeypatch.setattr(runs.accel, 'finish', lambda t, c, f: seen.append(('finish', t, c, Path(f), sorted(os.listdir(f)))))
    cfg = cfg_for(tmp_path); r, t, res = train_run(cfg, max_steps=2)
    assert seen == [('prepare', t, cfg, 0), ('finish', t, cfg, cfg.run_dir/'.final.tmp', ['model.safetensors'])]

class Tok:
    "A tokenizer's saving contract: save_pretrained(folder)."
    def save_pretrained(self, path): (Path(path)/'tokenizer.json').write_text('{}')

def test_fit_saves_an_adapter(tmp_path, active):
    from peft import LoraConfig, get_peft_model
    cfg = cfg_for(tmp_path); cfg.adapter.method, cfg.adapter.target_modules = 'lora', ['lin']
    with runs.Run(cfg) as r:
        t = FakeTrainer(cfg.run_dir, max_steps=2, callbacks=r.callbacks, model=get_peft_model(Tiny(), LoraConfig(r=2, target_modules=['lin'])), tok=Tok())
        res = r.fit(t)
    f = cfg.run_dir/'final'
    assert sorted(os.listdir(f)) == ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json']
    assert 'library_name: peft' in (f/'README.md').read_text() and runs.complete(cfg.run_dir/'checkpoint-2')
    from safetensors.torch import load_file
    w = load_file(str(f/'adapter_model.safetensors'))
    assert torch.equal(w['base_model.model.lin.lora_B.weight'], t.model.base_model.model.lin.lora_B.default.weight.detach())

@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason='signal handlers need the main thread')
def test_sigterm_during_fit_stops_the_run(tmp_path, active, handlers):
    class Term(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2: os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.05)  # handled on this thread, between bytecodes
    cfg = cfg_for(tmp_path)
    r, t, res = train_run(cfg, max_steps=6, save_steps=5, limit=None, callbacks=[Term()])
    assert (res.status, res.step, runs.read_result(cfg.run_dir)['status']) == ('stopped', 2, 'stopped') and r.stop.is_set()
    assert names(runs.ckpt_dirs(cfg.run_dir)) == ['checkpoint-2']

def test_a_watched_run_takes_its_threads_warnings(tmp_path, recwarn):
    "With a queue (a view reads it), warnings raised in the run's thread go to its events once each, never to the console."
    cfg = cfg_for(tmp_path)
    def body():
        with runs.Run(cfg, EventQueue()):
            for _ in range(3): warnings.warn_explicit('old api', FutureWarning, 'lib.py', 7)
    t = threading.Thread(target=body); t.start(); t.join()
    logs = [(e.level, e.message) for e in read_events(cfg.run_dir) if e.kind == 'Log']
    assert logs == [('warning', 'FutureWarning: old api (lib.py:7)'), ('warning', 'repeated: 3x FutureWarning: old api (lib.py:7)')]
    assert not [w for w in recwarn if 'old api' in str(w.message)]  # not shown on the way Python shows warnings
    assert warnings.showwarning.__name__ != '_show'                  # put back when the run ended

def test_an_unwatched_run_leaves_warnings_alone(tmp_path):
    "Without a queue (`ftnb.train(cfg)` in a cell) a warning is shown as Python shows it, and not logged."
    cfg = cfg_for(tmp_path)
    with pytest.warns(FutureWarning, match='plain'):
        with runs.Run(cfg): warnings.warn_explicit('plain', FutureWarning, 'lib.py', 8)
    assert not [e for e in read_events(cfg.run_dir) if e.kind == 'Log' and 'plain' in e.message]


def test_a_view_removes_the_bars_and_a_plain_run_gets_the_metrics_bar(tmp_path):
    "CO1, CO2: with a view (draws_console) transformers' bars go and none comes back; a plain run's bar is swapped for MetricsBar."
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback
    from ftnb.console import MetricsBar, metrics_bar
    class View(TrainerCallback): draws_console = True
    for cbs, want in (([ProgressCallback()], [MetricsBar]), ([NotebookProgressCallback()], [MetricsBar]),
                      ([ProgressCallback(), View()], [View]), ([PrinterCallback()], [PrinterCallback])):  # tqdm off: transformers' printer stays
        t = FakeTrainer(tmp_path, callbacks=cbs)
        runs.console_off(t); metrics_bar(t)
        assert [type(c) for c in t.callbacks] == want, (cbs, t.callbacks)


def test_metrics_bar_keeps_the_train_loss_beside_an_eval_log():
    "CO1: each log updates the bar's line; an eval log adds eval loss and keeps the last train loss; other ranks draw nothing."
    from ftnb.console import MetricsBar
    seen, st = [], TrainerState()
    b = MetricsBar(); b.training_bar = SimpleNamespace(set_postfix_str=lambda s, refresh=True: seen.append(s))
    b.on_log(None, st, None, logs={'loss': 2.0, 'grad_norm': 1.0, 'epoch': 0.5})
    b.on_log(None, st, None, logs={'eval_loss': 1.5, 'eval_runtime': 0.1})
    assert seen == ['loss 2 · grad norm 1', 'loss 2 · eval loss 1.5 · grad norm 1'] and b.line == seen[-1]
    st.is_world_process_zero = False
    b.on_log(None, st, None, logs={'loss': 9.0}); assert len(seen) == 2


def test_checkpointing_goes_by_the_name_transformers_takes_without_a_warning(tmp_path):
    "transformers 5.24 renamed gradient_checkpointing to activation_checkpointing; the old name warns at every run."
    import dataclasses, transformers
    from transformers import TrainingArguments
    new = 'activation_checkpointing' in {f.name for f in dataclasses.fields(TrainingArguments)}
    assert runs.CKPT == ('activation_checkpointing' if new else 'gradient_checkpointing'), transformers.__version__
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        a = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **{runs.CKPT: True})
    assert a.gradient_checkpointing is True  # TRL reads the old name: it mirrors the new one
