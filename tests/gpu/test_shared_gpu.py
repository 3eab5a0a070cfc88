"""method.sync='shared' on a CUDA GPU (issue 9, items 1-3 and 9): one copy of the frozen base weights, used by the
trainer and by vLLM; the adapter handed to vLLM from memory each sync; sleep frees only the KV cache.
The exact Qwen2.5-0.5B config (vocabulary 151,936, tied embeddings) with random bf16 weights, built by bench/grpo.py.

Run on the GPU machine, in its own process (one sleep-mode engine per process):
    PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_shared_gpu.py -x -rP
Lines starting with SHARED-GPU carry the measured numbers (also written to $OUT/shared_gpu.json)."""
import gc, json, os, statistics, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]
if torch.cuda.is_available(): pytest.importorskip('vllm')

RESULTS = {}

def report(key, **vals):
    vals = {k: round(v, 4) if isinstance(v, float) else v for k, v in vals.items()}
    RESULTS[key] = vals
    print(f'SHARED-GPU {key}: ' + json.dumps(vals), flush=True)
    (Path(os.environ.get('OUT', '/tmp'))/'shared_gpu.json').write_text(json.dumps(RESULTS, indent=1))

def used_gib():
    torch.cuda.synchronize(); gc.collect(); torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30

def divergence(a, b):
    "Per prompt, the index of the first token where two greedy outputs differ (the length if they never do)."
    return [next((i for i, (x, y) in enumerate(zip(p[0], q[0])) if x != y), len(p[0])) for p, q in zip(a, b)]

@pytest.fixture(scope='module')
def path():
    from grpo import build
    return build('0.5b')

@pytest.fixture(scope='module')
def tok(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)

def load_lora(path, seed=0):
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
    pm = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules='all-linear'))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02)
    return pm

def train_steps(pm, ids, n=3):
    "A few optimizer steps on the adapter (the frozen base is read, never written)."
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
    pm.train()
    for _ in range(n):
        loss = pm(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad()
    pm.eval()
    return loss.item()

def test_shared_engine(path, tok):
    from ftnb.engine import HFEngine, get_engine, shutdown_engine
    shutdown_engine()
    prompts = [tok(f'{a}+{b}=')['input_ids'] for a, b in [(12, 34), (5, 6), (100, 1), (7, 77)]]
    ids = torch.tensor([sum(prompts, [])[:16]] * 4, device='cuda')
    pm = load_lora(path)
    base_bytes = sum(p.numel() * p.element_size() for n, p in pm.named_parameters() if not p.requires_grad)
    hf = HFEngine(pm, tok)
    greedy = lambda e: e.generate(prompts, max_tokens=32, temperature=0)
    ref = greedy(hf)
    eng = get_engine(pm, engine='vllm', sync='shared', sleep_level=1, gpu_memory_utilization=0.3, max_model_len=512)
    before = used_gib()
    t0 = time.time(); eng.sync(pm, 'shared'); first_sync_s = time.time() - t0
    after = used_gib()
    vm = dict(eng._vmodel().named_parameters())
    emb = vm['model.embed_tokens.weight']
    assert pm.get_base_model().model.embed_tokens.weight.data_ptr() == emb.data_ptr()
    assert pm.get_base_model().lm_head.weight.data_ptr() == emb.data_ptr()  # tied: both point at vLLM's one tensor
    freed = before - after
    shared = greedy(eng)
    eng.sync(pm, 'adapter'); assert not eng._shared  # control: the same adapter through vLLM's file loader, own base copy
    files = greedy(eng)
    eng.sync(pm, 'shared'); assert eng._shares(pm)  # shared again (the base re-pointed at vLLM's)
    again = greedy(eng)
    first = divergence(ref, shared)
    report('share', base_gib=base_bytes / 2**30, freed_gib=freed, first_sync_s=first_sync_s, hf_first_divergence=first,
           vs_adapter_files=divergence(shared, files), vs_reshared=divergence(shared, again))
    assert freed >= 0.8 * base_bytes / 2**30  # the trainer's copy of the base is gone
    # vLLM's greedy decoding is not bitwise repeatable here (seen on the H200: the same engine, weights and adapter
    # parted at token 31 of 32 between two calls), so agreement is asked for the first 8 tokens of every prompt
    assert min(divergence(shared, files) + divergence(shared, again)) >= 8
    # Against HF: with random weights and 151,936 entries the logits are nearly flat, so greedy paths part at near-ties;
    # the teacher-forced log-prob gap below is the exact check. Garbage weights would part at token 0 for every prompt.
    assert sorted(first)[len(first) // 2] >= 4, first
    # Sleep frees the KV cache only: the trainer keeps reading the weights, and trains
    awake = used_gib()
    eng.sleep(); asleep = used_gib()
    loss = train_steps(pm, ids)
    t0 = time.time(); eng.sync(pm, 'shared'); eng.wake(); torch.cuda.synchronize(); wake_sync_s = time.time() - t0
    after_train = greedy(eng)
    hf_after = greedy(hf)
    first = divergence(hf_after, after_train)
    eng.sync(pm, 'adapter'); files_after = greedy(eng); eng.sync(pm, 'shared')
    report('sleep_train_wake', awake_gib=awake, asleep_gib=asleep, freed_by_sleep_gib=awake - asleep, loss=loss,
           wake_and_sync_s=wake_sync_s, changed_by_training=hf_after != ref, engine_changed=after_train != shared,
           vs_adapter_files=divergence(after_train, files_after), hf_first_divergence=first)
    assert hf_after != ref and after_train != shared  # the steps changed the model, and the engine saw it
    assert min(divergence(after_train, files_after)) >= 8
    kv_share_gib = 0.3 * torch.cuda.mem_get_info()[1] / 2**30 - base_bytes / 2**30  # vLLM's 30% less its weights: mostly KV cache
    assert awake - asleep >= 0.5 * kv_share_gib and asleep >= base_bytes / 2**30  # the KV cache went; the weights stayed (training read them)
    # Sync cost: the adapter from memory (the aim of issue 9: under 20 ms at 1.5B r16; this is 0.5B)
    eng.drain_phases()
    for _ in range(10): eng.sync(pm, 'shared')
    ts = [p['end'] - p['start'] for p in eng.drain_phases() if p['name'] == 'sync:shared']
    sl, wk = [], []
    for _ in range(3):
        t0 = time.time(); eng.sleep(); torch.cuda.synchronize(); sl.append(time.time() - t0)
        t0 = time.time(); eng.wake(); torch.cuda.synchronize(); wk.append(time.time() - t0)
    # Log-probs: the engine's sampling log-probs against the trainer's, on the same tokens
    many = [p for p in prompts for _ in range(8)]
    out = eng.generate(many, max_tokens=64, temperature=1.0, logprobs=True, seed=0)
    gaps = []
    with torch.no_grad():
        for p, c, lp in zip(many, out, out.logprobs):
            x = torch.tensor([p + c[0]], device='cuda')
            lg = pm(input_ids=x).logits[0, len(p) - 1:-1].float().log_softmax(-1)
            mine = lg.gather(-1, torch.tensor(c[0], device='cuda')[:, None])[:, 0]
            gaps.append((mine - torch.tensor(lp[0], device='cuda')).abs().mean().item())
    gen_s = []
    for _ in range(3):
        t0 = time.time(); eng.generate(many, max_tokens=256, temperature=1.0, ignore_eos=True); torch.cuda.synchronize(); gen_s.append(time.time() - t0)
    report('timings', sync_shared_ms=1000 * statistics.median(ts), sleep_s=statistics.median(sl), wake_s=statistics.median(wk),
           logp_gap_mean=statistics.mean(gaps), generate_32x256_s=statistics.median(gen_s))
    assert statistics.median(ts) < 0.1 and statistics.mean(gaps) < 0.0125 * 2
    # Shutdown: the model gets its own copy back and still computes the same
    with torch.no_grad(): lg0 = pm(input_ids=ids).logits
    shutdown_engine()
    with torch.no_grad(): lg1 = pm(input_ids=ids).logits
    assert torch.equal(lg0, lg1) and pm.get_base_model().lm_head.weight is pm.get_base_model().model.embed_tokens.weight
    del pm, hf; end = used_gib()
    report('shutdown', used_after_gib=end)
