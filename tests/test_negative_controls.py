"""Negative controls: the key checks of the suite, shown to fail on a deliberately broken version.

A check that passes on a broken implementation proves nothing; each test here breaks one thing on purpose and asserts
that the check the suite relies on catches it (issue 14, item 3). Further controls sit beside their checks:
the run folder's ownership in tests/test_runs.py, the engine's sync in tests/test_engine_vllm_cpu.py."""
import threading

import pytest
from datasets import Dataset
from transformers import Trainer

from ftnb.config import DataCfg
from ftnb.data import tokenize
from ftnb.testing import tiny_tokenizer

from test_data import CHAT, end_of_turn, trained_runs
from test_sft import StopAt, cfg_for, losses
import ftnb

# --- the loss mask: a mask shifted by one token ---------------------------------------------------------------------

def test_mask_check_catches_a_shift_by_one():
    tok = tiny_tokenizer()
    row = tokenize(Dataset.from_dict({'messages': [CHAT]}), tok, DataCfg(path='mem'))[0]
    want = ['4' + end_of_turn(tok), 'It is 42.' + end_of_turn(tok)]
    assert trained_runs(tok, row) == want                       # the real mask passes the exact check
    for shifted in (row['labels'][1:] + [-100], [-100] + row['labels'][:-1]):  # one token late / early
        lab = [i if l != -100 else -100 for i, l in zip(row['input_ids'], shifted)]
        assert trained_runs(tok, {**row, 'labels': lab}) != want  # ...and the same check fails on a shifted one

# --- resume: a resume that restores the weights but not the optimizer and the schedule ------------------------------

def test_resume_check_catches_a_resume_from_the_wrong_state(tmp_path, monkeypatch):
    "tests/test_sft.py compares steps 8-10 of a resumed run with an uninterrupted one; a half-done resume must fail that."
    straight = losses(ftnb.train(cfg_for(tmp_path, 'straight', max_steps=10)).run_dir)
    flag = threading.Event()
    cfg = cfg_for(tmp_path, 'broken-resume', max_steps=10)
    ftnb.train(cfg, stop=flag, callbacks=[StopAt(7, flag)])
    monkeypatch.setattr(Trainer, '_load_optimizer_and_scheduler', lambda self, ckpt: None)  # the broken resume
    cfg.train.resume_from = 'latest'
    resumed = losses(ftnb.train(cfg).run_dir)
    assert sorted(resumed) == list(range(1, 11))                 # the step count alone does not notice
    assert any(resumed[s] != pytest.approx(straight[s], rel=1e-3) for s in (8, 9, 10)), (straight, resumed)
