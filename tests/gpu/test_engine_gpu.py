"""ftnb.engine on a CUDA GPU: vLLM colocated with sleep mode, on a Qwen2-shaped model of ~0.48B parameters with random
weights built here (nothing comes from a hub).

Run on the lent GPU machine (see shared/gpu/README.md), from the repository root:
    PYTHONPATH=/tmp/site pytest -m gpu tests/gpu/test_engine_gpu.py -rP
`-rP` prints the measured numbers (lines starting with ENGINE-GPU); they are also written to $OUT/engine_gpu.json
(or /tmp/engine_gpu.json). The tests run in file order and share one engine; about 3 minutes on an H100.
"""
import gc, json, os, statistics, sys, time
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `import ftnb`
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]
if torch.cuda.is_available(): pytest.importorskip('vllm')

RESULTS = {}

def report(key, **vals):
    "Print one line of measured numbers and add them to $OUT/engine_gpu.json."
    vals = {k: round(v, 4) if isinstance(v, float) else v for k, v in vals.items()}
    RESULTS[key] = vals
    print(f'ENGINE-GPU {key}: ' + ', '.join(f'{k}={v}' for k, v in vals.items()), flush=True)
    out = Path(os.environ.get('OUT', '/tmp')) / 'engine_gpu.json'
    import vllm
    meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, vllm=vllm.__version__, date=time.strftime('%Y-%m-%d'))
    out.write_text(json.dumps(dict(meta=meta, **RESULTS), indent=1))

def used_gib():
    "GPU memory in use on the device (all of it: trainer and engine), in GiB."
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30

def phase_times(eng, prefix):
    return [p['end'] - p['start'] for p in eng.phases if p['name'].startswith(prefix)]

@pytest.fixture(scope='module')
def tok():
    from ftnb.testing import tiny_tokenizer
    return tiny_tokenizer()

@pytest.fixture(scope='module')
def q05(tok):
    "A Qwen2-shaped model of ~0.48B parameters with random bf16 weights, saved with the tiny tokenizer."
    from transformers import AutoModelForCausalLM, Qwen2Config
    path = Path('/tmp/ftnb-gpu/q05')
    if not (path / 'config.json').exists():
        # vocab = the tokenizer's, so every sampled id decodes; the blocks carry the ~0.48B parameters (as bench/grpo.py '0.5b')
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=1024, intermediate_size=4096, num_hidden_layers=32, num_attention_heads=16,
                          num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6, tie_word_embeddings=True,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
        torch.manual_seed(0)
        with torch.device('cuda'): m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        m.save_pretrained(path); tok.save_pretrained(path)
        report('model', params_m=sum(p.numel() for p in m.parameters()) / 1e6)
        del m; gc.collect(); torch.cuda.empty_cache()
    return path

def load_lora(path, seed=0):
    "The training model: the base on the GPU in bf16 with a LoRA r16 on all linear layers whose B is not zero."
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
    pm = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules='all-linear'))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02)
    return pm

@pytest.fixture(scope='module')
def pm(q05): return load_lora(q05)

@pytest.fixture(scope='module')
def prompts(tok): return [tok(f'{a}+{b}=')['input_ids'] for a, b in [(12, 34), (5, 6), (100, 1), (7, 77)]]

SPEC = dict(engine='vllm', max_model_len=1024, gpu_memory_utilization=0.3, sleep_level=1, sync='adapter')  # LoRA on: both ways sync

def greedy(eng, prompts): return eng.generate(prompts, max_tokens=32, temperature=0)

def divergence(a, b):
    "Per prompt, the index of the first token where two greedy outputs differ (the length if they never do)."
    return [next((i for i, (x, y) in enumerate(zip(p[0], q[0])) if x != y), len(p[0])) for p, q in zip(a, b)]

def test_sleep_frees_90_percent(pm, prompts):
    from ftnb.engine import get_engine, shutdown_engine
    shutdown_engine()
    base = used_gib()
    t0 = time.time(); eng = get_engine(pm, **SPEC); start_s = time.time() - t0
    eng.sync(pm); greedy(eng, prompts)
    awake = used_gib(); held = awake - base
    eng.sleep(1); s1 = used_gib()
    eng.wake(); eng.sleep(2); s2 = used_gib()
    eng.wake()
    f1, f2 = (awake - s1) / held, (awake - s2) / held
    report('sleep', start_s=start_s, base_gib=base, engine_gib=held, left_after_sleep1_gib=s1 - base, left_after_sleep2_gib=s2 - base,
           freed1=f1, freed2=f2, sleep1_s=phase_times(eng, 'sleep:1')[-1], sleep2_s=phase_times(eng, 'sleep:2')[-1],
           wake_s=statistics.median(phase_times(eng, 'wake')))
    assert f1 >= 0.9 and f2 >= 0.9

def test_greedy_identical_after_level2_sleep(pm, q05, prompts):
    from transformers import AutoModelForCausalLM
    from ftnb.engine import get_engine
    eng = get_engine(pm, **SPEC)
    for how in ('adapter', 'full'):
        model = pm if how == 'adapter' else AutoModelForCausalLM.from_pretrained(q05, dtype=torch.bfloat16).cuda()
        eng.sync(model, how)
        before = greedy(eng, prompts)
        eng.sleep(2); eng.wake()  # level 2 dropped the weights: wake sends them again from `model`
        after = greedy(eng, prompts)
        first = divergence(before, after)
        report(f'level2_{how}', identical=after == before, tokens=sum(len(c[0]) for c in before), first_divergence=first)
        # Gibberish (weights not restored) differs from the first token. With random bf16 weights the logits are nearly
        # flat, so a late flip between near-ties is not a restore failure: require the first 8 tokens of every prompt.
        assert min(first) >= 8, first
        if how == 'full':  # the run's model is gone: wake reloads the checkpoint from disk
            del model; gc.collect()
            eng.sleep(2); eng.wake()
            first = divergence(before, greedy(eng, prompts)); report('level2_disk', first_divergence=first)
            assert min(first) >= 8, first
    eng.sync(pm, 'merge'); m1 = greedy(eng, prompts)
    eng.sleep(2); eng.wake(); m2 = greedy(eng, prompts)  # wake merges again, into fresh copies: the same weights
    report('level2_merge', identical=m1 == m2, first_divergence=divergence(m1, m2))
    assert min(divergence(m1, m2)) >= 8
    res = {}
    for via in ('reload', 'load'):  # vLLM's layerwise reload (the CPU path) must give the same weights as load_weights
        eng.push_via, eng._base_of = via, None  # no base on record: the base weights go too, not just the adapter
        eng.sync(pm, 'adapter'); res[via] = greedy(eng, prompts)
    r, l = res['reload'], res['load']
    report('push_via', reload_equals_load=r == l, first_divergence=divergence(r, l))
    assert min(divergence(r, l)) >= 8
    eng.sleep()

def test_sync_and_generate_timings(pm, prompts):
    "Seconds per sync by way, per sleep-sync-wake cycle, and per generation of 32 x 256 tokens (to choose 'auto' and the sleep level)."
    from ftnb.engine import get_engine
    eng = get_engine(pm, **SPEC)
    res = {}
    for how in ('adapter', 'merge', 'adapter'):  # adapter twice: the first one also sends the base weights once
        eng.drain_phases()
        for _ in range(5):
            eng.sync(pm, how)
        res[how] = statistics.median(phase_times(eng, f'sync:{how}'))
    cycle = {}  # what a GRPO step pays around its generation: sleep, sync, wake
    for level in (1, 2):
        for how in ('adapter', 'merge'):
            ts = []
            for _ in range(3):
                t0 = time.time(); eng.sleep(level); eng.sync(pm, how); eng.wake(); torch.cuda.synchronize(); ts.append(time.time() - t0)
            cycle[f'cycle_sleep{level}_{how}_s'] = statistics.median(ts)
    eng.sync(pm, 'adapter')
    many = [p for p in prompts for _ in range(8)]
    eng.drain_phases()
    for _ in range(3): out = eng.generate(many, max_tokens=256, temperature=1.0, ignore_eos=True)
    g_lora = statistics.median(phase_times(eng, 'generate'))
    eng.sync(pm, 'merge'); eng.drain_phases()
    for _ in range(3): eng.generate(many, max_tokens=256, temperature=1.0, ignore_eos=True)
    g_merged = statistics.median(phase_times(eng, 'generate'))
    report('timings', sync_adapter_s=res['adapter'], sync_merge_s=res['merge'], generate_32x256_lora_s=g_lora,
           generate_32x256_merged_s=g_merged, tokens=sum(len(c[0]) for c in out), **cycle)
    eng.sleep()

def test_trl_grpo_two_steps_with_sleep(pm, tok, tmp_path):
    "GRPOTrainer(use_vllm=True, vllm_mode='colocate') served by ftnb's engine, with sleep between generations."
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from ftnb.engine import get_engine, serve_trl
    eng = get_engine(pm, **SPEC)
    eng.drain_phases()
    ds = Dataset.from_dict({'prompt': [f'{a}+{b}=' for a in range(8) for b in range(4)]})
    def reward_len(completions, **kw): return [float(len(c)) for c in completions]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=8, max_completion_length=64,
                      max_steps=2, learning_rate=1e-5, use_vllm=True, vllm_mode='colocate', report_to=[], logging_steps=1,
                      save_strategy='no', bf16=True)
    with serve_trl(eng):
        tr = GRPOTrainer(model=pm, reward_funcs=reward_len, args=args, train_dataset=ds, processing_class=tok)
    assert tr.vllm_generation.llm is eng.llm
    t0 = time.time(); tr.train(); train_s = time.time() - t0
    logs = [h for h in tr.state.log_history if 'sampling/sampling_logp_difference/mean' in h]
    names = [p['name'] for p in eng.drain_phases()]
    report('trl_grpo', train_s=train_s, logp_diff_mean=logs[-1]['sampling/sampling_logp_difference/mean'],
           is_ratio_mean=logs[-1]['sampling/importance_sampling_ratio/mean'], phases=' '.join(names))
    assert len(logs) == 2 and logs[-1]['sampling/sampling_logp_difference/mean'] < 0.1
    assert 'sleep:1' in names and 'sync:merge' in names  # serve_trl's 'auto' merges a plain LoRA
    del tr; gc.collect(); torch.cuda.empty_cache()

def test_back_to_back_runs_do_not_grow_memory(q05, prompts):
    "A notebook cell run three times: load, LoRA, engine, sync, generate, sleep. Memory between runs stays flat."
    from ftnb.config import ConfigError
    from ftnb.engine import current_engine, get_engine, shutdown_engine
    gc.collect(); torch.cuda.empty_cache()
    base = used_gib()  # the module's engine asleep (the same settings as the runs below: they reuse it)
    def run(seed, **spec):
        model = load_lora(q05, seed)
        eng = get_engine(model, **{**SPEC, **spec})
        eng.sync(model); eng.generate(prompts, max_tokens=64); eng.sleep()
        del model; gc.collect(); torch.cuda.empty_cache()
        return eng, used_gib()
    e1, m1 = run(1)
    e2, m2 = run(2)
    assert e2 is e1  # the same engine serves the second run
    # Other engine settings: the old engine goes first. vLLM 0.26 allowed one sleep-mode engine per process; ftnb
    # releases the old one's pools and then either starts the new one or says, before loading anything, to restart.
    t0 = time.time()
    try: e3, m3, err = *run(3, max_model_len=512), None
    except ConfigError as e: e3, m3, err = None, None, str(e)
    replace_s = time.time() - t0
    assert e1.llm is None
    gc.collect(); torch.cuda.empty_cache()
    after3 = used_gib()
    shutdown_engine(); gc.collect(); torch.cuda.empty_cache()
    end = used_gib()
    report('back_to_back', base_gib=base, after_run1_gib=m1, after_run2_gib=m2, after_run3_other_settings_gib=m3,
           after_run3_gib=after3, after_shutdown_gib=end, replace_s=replace_s, second_engine=err or 'started')
    assert m1 <= base + 0.25 and m2 <= m1 + 0.25 and after3 <= m1 + 0.5 and end <= base
    if err: assert 'restart the kernel' in err and 'one engine per process' in err
    else: assert current_engine() is None and e3 is not e1
