"SFT end to end on the offline tiny model: the loss falls, runs stop and resume at the right step, the folder is complete."
import threading
import pytest
from transformers import TrainerCallback
from ftnb.config import RunConfig
from ftnb.data import prepare
from ftnb.demo import heldout_loss
from ftnb.events import read_events, read_jsonl
from ftnb.models import load_model, load_tokenizer
from ftnb.sft import train

def cfg_for(tmp_path, name, **train):
    return RunConfig.model_validate({'model': {'dtype': 'float32'},
        'data': {'path': 'toy:addition', 'eval_path': 'toy:addition_test', 'max_length': 32, 'max_samples': 400},
        'adapter': {'method': 'full'},
        'train': {'output_dir': str(tmp_path), 'run_name': name, 'batch_size': 16, 'lr': 2e-3, 'logging_steps': 1,
                  'save_steps': 5, 'seed': 0, **train}})

def test_sft_lowers_heldout_loss(tmp_path):
    cfg = cfg_for(tmp_path, 'learn', max_steps=40)
    tok = load_tokenizer(cfg.model)
    _, eval_ds = prepare(cfg.data, tok, seed=0)
    before = heldout_loss(load_model(cfg), eval_ds)
    res = train(cfg)
    after = heldout_loss(res.model, eval_ds)
    assert after < 0.6 * before, (before, after)
    assert res.metrics['eval_loss'] < before

class StopAt(TrainerCallback):
    def __init__(self, step, flag): self.step, self.flag = step, flag
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step: self.flag.set()

def losses(run_dir):
    return {r['step']: r['loss'] for r in read_jsonl(run_dir/'metrics.jsonl') if 'loss' in r}

def test_stop_then_resume_continues_at_the_right_step(tmp_path):
    straight = train(cfg_for(tmp_path, 'straight', max_steps=10))
    flag = threading.Event()
    cfg = cfg_for(tmp_path, 'resumed', max_steps=10)
    first = train(cfg, stop=flag, callbacks=[StopAt(7, flag)])
    assert (first.status, first.step) == ('stopped', 7)
    assert (first.run_dir/'checkpoint-7'/'trainer_state.json').exists()
    cfg.train.resume_from = 'latest'
    second = train(cfg)
    assert (second.status, second.step) == ('finished', 10)
    a, b = losses(straight.run_dir), losses(second.run_dir)
    assert sorted(b) == list(range(1, 11))          # steps 1-7, then 8-10 from the resumed trainer
    for s in (8, 9, 10): assert b[s] == pytest.approx(a[s], rel=1e-3), (s, a[s], b[s])
    kinds = [e.kind for e in read_events(second.run_dir)]
    assert kinds.count('RunStart') == 2 and kinds[-1] == 'RunEnd'

def test_failed_run_leaves_readable_folder(tmp_path):
    cfg = cfg_for(tmp_path, 'broken', max_steps=2)
    cfg.data.path = str(tmp_path/'missing.jsonl')
    with pytest.raises(Exception):
        train(cfg)
    assert (cfg.run_dir/'config.yaml').exists()
    ev = read_events(cfg.run_dir)
    assert ev[-1].kind == 'RunEnd' and ev[-1].status == 'failed' and 'missing.jsonl' in ev[-1].error

def test_pretrain_trains_every_token(tmp_path):
    "method 'pretrain' on chat data trains every token; 'sft' on the same rows masks the prompts."
    def run(method):
        cfg = RunConfig.model_validate({'data': {'path': 'toy:chat', 'max_length': 64, 'max_samples': 16}, 'method': {'name': method},
            'train': {'output_dir': str(tmp_path), 'run_name': method, 'max_steps': 1, 'batch_size': 4}})
        res = train(cfg)
        assert res.status == 'finished' and (res.run_dir/'final'/'adapter_config.json').exists()
        return [sum(l == -100 for l in row) for row in res.trainer.train_dataset['labels']]
    assert sum(run('pretrain')) == 0        # not one token masked
    assert all(n > 0 for n in run('sft'))   # the same rows under SFT: every sample has masked prompt tokens

def test_first_sigint_sets_stop_second_interrupts():
    "Behaviour, not identity: works when pytest runs in the background, where SIGINT starts out ignored."
    import signal
    from ftnb.runs import signals_stop
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)  # a known handler: a foreground terminal's
    try:
        flag = threading.Event()
        with signals_stop(flag):
            signal.raise_signal(signal.SIGINT)
            assert flag.is_set()
            with pytest.raises(KeyboardInterrupt): signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler we installed is back
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: SIGINT ignored, and left ignored
        with signals_stop(flag): assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally: signal.signal(signal.SIGINT, prev)
