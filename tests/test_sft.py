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

def test_every_trainer_argument_comes_from_one_field():
    "Each TrainingArguments/SFTConfig value ftnb sets changes with exactly the config field it names, or is a fixed setting."
    from ftnb.data import sft_kwargs
    from ftnb.runs import trainer_kwargs
    def args(cfg, has_eval=True): return {**trainer_kwargs(cfg, has_eval), **sft_kwargs(cfg.data)}
    base = RunConfig.model_validate({'train': {'max_steps': 10, 'eval_steps': 5}})
    change = {'train.output_dir': 'elsewhere', 'train.run_name': 'other', 'train.epochs': 3.0, 'train.max_steps': 20,
              'train.batch_size': 4, 'train.grad_accum': 2, 'train.lr': 1e-3, 'train.lr_scheduler': 'cosine',
              'train.warmup_ratio': 0.1, 'train.weight_decay': 0.01, 'train.max_grad_norm': 0.5, 'train.logging_steps': 2,
              'train.eval_steps': 3, 'train.save_steps': 7, 'train.save_total_limit': 5, 'train.seed': 1,
              'data.max_length': 128, 'data.packing': True, 'data.padding_free': True}
    moved = {}
    for field, value in change.items():
        part, name = field.split('.'); cfg = base.model_copy(deep=True); setattr(getattr(cfg, part), name, value)
        a, b = args(base), args(cfg)
        moved[field] = sorted(k for k in a if a[k] != b[k])
    assert moved == {'train.output_dir': ['output_dir'], 'train.run_name': ['output_dir'], 'train.epochs': ['num_train_epochs'],
        'train.max_steps': ['max_steps'], 'train.batch_size': ['per_device_eval_batch_size', 'per_device_train_batch_size'],
        'train.grad_accum': ['gradient_accumulation_steps'], 'train.lr': ['learning_rate'], 'train.lr_scheduler': ['lr_scheduler_type'],
        'train.warmup_ratio': ['warmup_steps'], 'train.weight_decay': ['weight_decay'], 'train.max_grad_norm': ['max_grad_norm'],
        'train.logging_steps': ['logging_steps'], 'train.eval_steps': ['eval_steps'], 'train.save_steps': ['save_steps'],
        'train.save_total_limit': ['save_total_limit'], 'train.seed': ['data_seed', 'seed'], 'data.max_length': ['max_length'],
        'data.packing': ['packing'], 'data.padding_free': ['max_length', 'padding_free']}, moved
    # the rest: an eval set or not, the machine (CPU here), or fixed settings that ftnb needs as they are
    a, no_eval = args(base), args(base, has_eval=False)
    assert {k for k in a if a[k] != no_eval[k]} == {'eval_strategy', 'metric_for_best_model'}
    from ftnb.runs import CKPT  # activation_checkpointing since transformers 5.24
    machine = {'use_cpu': True, 'bf16': False, 'fp16': False, CKPT: False}  # CPU: fp32, no checkpointing
    fixed = {'logging_first_step': True, 'save_strategy': 'steps', 'report_to': 'none', 'dataloader_num_workers': 0, 'packing_strategy': 'bfd',
             'completion_only_loss': False, 'assistant_only_loss': False, 'use_liger_kernel': False,
             'optim': 'adamw_torch_fused', 'torch_compile': False, 'torch_compile_backend': None, 'torch_compile_mode': None}  # accel's defaults
    import torch
    assert {k: a[k] for k in fixed} == fixed
    if not torch.cuda.is_available(): assert {k: a[k] for k in machine} == machine  # on a GPU: bf16 and checkpointing, by the machine
    assert set(a) == {k for v in moved.values() for k in v} | {'eval_strategy', 'metric_for_best_model'} | set(machine) | set(fixed)

def test_train_runs_where_ipython_is_not_installed(tmp_path):
    "A bare GPU box has no IPython (ftnb's core does not need it): ftnb.train once died there importing transformers' notebook bar."
    import json, subprocess, sys
    (tmp_path/'cfg.json').write_text(json.dumps(cfg_for(tmp_path, 'bare', max_steps=2).model_dump(mode='json')))
    code = f"""
import sys; sys.modules['IPython'] = None  # as if not installed: any import of it fails
import json, ftnb
from ftnb.config import RunConfig
res = ftnb.train(RunConfig.model_validate(json.load(open({str(tmp_path/'cfg.json')!r}))))
print('RESULT', res.status, res.step, 'transformers.utils.notebook' in sys.modules)
"""
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert 'RESULT finished 2 False' in p.stdout, (p.stdout + p.stderr)[-3000:]

def test_lm_head_trains_through_modules_to_save_and_a_lora_on_it_is_refused_first(tmp_path):
    "TRL reads lm_head.weight directly: a LoRA there is a ConfigError before anything loads; modules_to_save=['lm_head'] trains it."
    import torch
    from ftnb.config import ConfigError
    from ftnb.runs import check_head
    bad = cfg_for(tmp_path, 'head', max_steps=2).model_copy(deep=True)
    bad.adapter = bad.adapter.model_copy(update={'method': 'lora', 'target_modules': ['q_proj', 'lm_head']})
    with pytest.raises(ConfigError, match='adapter.modules_to_save'): train(bad)
    assert not (tmp_path/'head').exists()  # refused before the run folder
    good = RunConfig.model_validate({**cfg_for(tmp_path, 'head2', max_steps=3).model_dump(mode='json'),
        'adapter': {'method': 'lora', 'r': 4, 'dropout': 0.0, 'target_modules': ['q_proj'], 'modules_to_save': ['lm_head']}})
    check_head(good)
    before = load_model(good).lm_head.weight.detach().clone()
    res = train(good)
    assert res.status == 'finished' and (res.model.get_output_embeddings().weight - before).abs().max() > 1e-4
