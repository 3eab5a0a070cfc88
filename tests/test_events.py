"""ftnb.events as the rest of ftnb relies on it: every event type round-trips, the queue is bounded and drops the oldest,
the run log routes each kind to its file in a form that survives a crash, and the trainer callback emits what it says.
(These are pytest twins of nbs/06_events.ipynb's examples, so that mutation testing can run them against ftnb/events.py.)"""
import json, math, threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ftnb import events as E
from ftnb.events import (EVENT_TYPES, Bus, Checkpoint, Event, EventCallback, EventQueue, Log, Metrics, Rollouts, RunEnd,
                         RunLog, RunStart, Timeline, from_dict, read_events, read_jsonl, read_rollouts)

SAMPLES = [RunStart(step=0, run_dir='r', max_steps=7, config={'a': 1}), Metrics(step=2, epoch=0.5, values={'loss': 1.5}),
           Log(step=3, level='warn', message='m'), Checkpoint(step=4, path='p/checkpoint-4'), RunEnd(step=5, status='stopped', error='e'),
           Rollouts(step=6, rows=[{'prompt': 'p', 'reward': 1.0}]), Timeline(step=7, phases=[{'name': 'generate', 'start': 0, 'end': 1}])]

def test_every_type_round_trips():
    assert set(EVENT_TYPES) == {type(e).__name__ for e in SAMPLES}
    for ev in SAMPLES:
        d = ev.to_dict()
        assert d['kind'] == ev.kind == type(ev).__name__ and d['step'] == ev.step and d['time'] == ev.time
        assert from_dict(json.loads(json.dumps(d))) == ev
    assert RunEnd().status == 'finished' and RunEnd().error is None and Log().level == 'info' and Event().step == 0

def test_event_time_is_now():
    import time
    t0 = time.time(); ev = Log(); assert t0 <= ev.time <= time.time()

def test_queue_is_bounded_and_drops_the_oldest():
    q = EventQueue(maxsize=3)
    for i in range(5): q.put(Log(step=i))
    assert len(q) == 3 and q.dropped == 2
    assert [e.step for e in q.drain()] == [2, 3, 4] and len(q) == 0 and q.drain() == []
    for i in range(3): q.put(Log(step=i))
    assert [e.step for e in q.drain(limit=2)] == [0, 1] and [e.step for e in q.drain(limit=5)] == [2]
    assert q.dropped == 2 and EventQueue().q.maxsize == 10_000

def test_queue_put_never_blocks_from_many_threads():
    q = EventQueue(maxsize=50)
    ts = [threading.Thread(target=lambda: [q.put(Log(step=i)) for i in range(200)]) for _ in range(4)]
    for t in ts: t.start()
    for t in ts: t.join(10)
    assert len(q) == 50 and q.dropped == 750

def test_clean():
    c = E._clean
    assert c({'a': float('nan'), 'b': [float('inf'), -float('inf'), 1.5], 'c': (2, 'x')}) == {'a': None, 'b': [None, None, 1.5], 'c': [2, 'x']}
    assert c(torch.tensor(2.5)) == 2.5 and isinstance(c(np.float32(0.25)), float) and c(np.int64(3)) == 3
    assert c(torch.tensor(float('nan'))) is None
    assert c(torch.tensor([1.0, 2.0])) == str(torch.tensor([1.0, 2.0]))  # not a scalar: its text, never a crash
    assert c(True) is True and c(None) is None and c('s') == 's'

def test_read_jsonl_skips_torn_lines(tmp_path):
    p = tmp_path/'m.jsonl'
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    assert read_jsonl(p) == [{'a': 1}, {'a': 2}]
    assert read_events(tmp_path) == []  # no events.jsonl: nothing, not an error

def test_run_log_routes_each_kind(tmp_path):
    log = RunLog(tmp_path/'new'/'run')  # makes the folder
    for ev in SAMPLES: log.write(ev)
    d = tmp_path/'new'/'run'
    evs = read_events(d)
    assert [e.kind for e in evs] == ['RunStart', 'Metrics', 'Log', 'Checkpoint', 'RunEnd']  # rollouts and timelines have their own files
    assert evs == SAMPLES[:5]
    assert read_jsonl(d/'metrics.jsonl') == [{'step': 2, 'epoch': 0.5, 'time': SAMPLES[1].time, 'loss': 1.5}]
    assert read_jsonl(d/'timeline.jsonl') == [{'step': 7, 'time': SAMPLES[6].time, 'phases': SAMPLES[6].phases}]
    assert [p.name for p in (d/'rollouts').iterdir()] == ['step-000006.parquet']
    df = read_rollouts(d)
    assert df.to_dict('records') == [{'prompt': 'p', 'reward': 1.0, 'step': 6}]
    assert read_rollouts(d, step=6).equals(df) and read_rollouts(d, step=5).empty and read_rollouts(tmp_path).empty
    log.write(Rollouts(step=7, rows=[{'prompt': 'q', 'reward': 0.0}, {'prompt': 'r', 'reward': 0.5}]))  # a second step, same folder
    both = read_rollouts(d)
    assert list(both.index) == [0, 1, 2] and list(both.step) == [6, 7, 7]  # one frame, numbered afresh
    assert list(read_rollouts(d, step=7).columns) == ['prompt', 'reward', 'step']  # no index column written

def test_run_log_cleans_values_and_appends(tmp_path):
    log = RunLog(tmp_path)
    log.write(Metrics(step=1, values={'loss': torch.tensor(float('inf')), 'lr': np.float64(1e-3)}))
    log.write(Metrics(step=2, values={'loss': 0.5}))
    rows = read_jsonl(tmp_path/'metrics.jsonl')
    assert [(r['step'], r['loss']) for r in rows] == [(1, None), (2, 0.5)] and rows[0]['lr'] == 1e-3
    log.write(Rollouts(step=1, rows=[{'reward': float('nan'), 'completion': 'x'}]))
    assert read_rollouts(tmp_path).reward.isna().all()

def test_run_log_is_thread_safe(tmp_path):
    log = RunLog(tmp_path)
    ts = [threading.Thread(target=lambda k=k: [log.write(Metrics(step=k * 100 + i, values={'x': 'y' * 500})) for i in range(50)]) for k in range(4)]
    for t in ts: t.start()
    for t in ts: t.join(20)
    assert sorted(r['step'] for r in read_jsonl(tmp_path/'metrics.jsonl')) == sorted(k * 100 + i for k in range(4) for i in range(50))

def test_bus_sends_to_every_sink(tmp_path):
    got, q = [], EventQueue()
    bus = Bus(RunLog(tmp_path), None, q, got.append)
    assert len(bus.sinks) == 3
    ev = bus.emit(Log(step=1, message='hi'))
    assert ev.message == 'hi' and got == [ev] and q.drain() == [ev] and read_events(tmp_path) == [ev]

def test_callback_emits_and_stops(tmp_path):
    got, stop = [], threading.Event()
    cb = EventCallback(Bus(got.append), stop, config={'c': 1})
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2, max_steps=9, epoch=0.0)
    cb.on_train_begin(args, state, None)  # a resumed run starts at its checkpoint's step
    assert got[-1] == RunStart(step=2, run_dir=str(tmp_path), max_steps=9, config={'c': 1}, time=got[-1].time)
    state.global_step, state.epoch = 3, 0.25
    cb.on_log(args, state, None, logs={'loss': 2.0, 'epoch': 0.25})
    assert (got[-1].kind, got[-1].step, got[-1].epoch, got[-1].values) == ('Metrics', 3, 0.25, {'loss': 2.0})
    cb.on_log(args, state, None)
    assert got[-1].values == {}
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(args, state, control); assert not control.should_save and not cb.stopped and len(got) == 3
    stop.set(); cb.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop and cb.stopped
    assert got[-1].kind == 'Log' and got[-1].step == 3 and 'step 3' in got[-1].message
    control2 = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(args, state, control2); assert not control2.should_save and len(got) == 4  # once only
    cb.on_save(args, state, None)
    assert got[-1] == Checkpoint(step=3, path=str(tmp_path/'checkpoint-3'), time=got[-1].time)
    assert EventCallback(Bus()).config == {} and not EventCallback(Bus()).stop.is_set()
