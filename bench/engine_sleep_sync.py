"""What each way of sleeping and syncing ftnb's vLLM engine costs, at a real shape (issue 9, items 2 and 3).

Run on the GPU machine from the repository root (one process: one sleep-mode engine per process):
    PYTHONPATH=/tmp/site:$PWD python bench/engine_sleep_sync.py --size 1.5b --out $OUT/engine_sleep_sync.json

The model is bench/grpo.py's exact Qwen2.5 config (random bf16 weights, vocabulary 151,936) with a LoRA r16 adapter on
all linear layers (B drawn at random, so the adapter changes the output); the engine is ftnb's, started with LoRA
support so that both syncs can run, `gpu_memory_utilization=0.3`, `max_model_len=512`. Measured, median of 5:
- sync 'adapter' (today: adapter files to tmpfs, then vLLM's add_lora), and the file-writing part alone;
- sync 'merge' (adapter merged into copies, every weight pushed);
- generation of 32 x 256 tokens with the LoRA kernels and with merged weights;
- sleep level 1 (weights offloaded to CPU, KV freed) and its wake; sleep level 2 (all dropped) and its wake plus the
  weight push it then needs; a KV-cache-only release (this script's own: vLLM has no such level; the allocations that
  vLLM's CuMemAllocator tagged 'kv_cache' are unmapped, the weights stay) and its wake (`wake_up(tags=['kv_cache'])`);
- memory in use after each (device-wide, cudaMemGetInfo), and greedy output before and after the KV-only cycle.
"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))

def used():
    import torch
    torch.cuda.synchronize(); free, total = torch.cuda.mem_get_info(); return round((total - free) / 2**30, 3)

def timed(f, n=5):
    import torch
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(ts), all_s=ts)

def kv_only_sleep(worker=None):
    "Unmap the engine's KV-cache allocations (tag 'kv_cache'), keep the weights mapped; returns the bytes released."
    from vllm.device_allocator.cumem import CuMemAllocator, unmap_and_release
    a, n = CuMemAllocator.get_instance(), 0
    for data in a.pointer_to_data.values():
        if data.tag == 'kv_cache' and not data.is_asleep:
            unmap_and_release(data.handle); data.is_asleep = True; n += data.handle[1]
    return n

def tag_bytes(worker=None):
    from vllm.device_allocator.cumem import CuMemAllocator
    out = {}
    for data in CuMemAllocator.get_instance().pointer_to_data.values(): out[data.tag] = out.get(data.tag, 0) + data.handle[1]
    return {k: round(v / 2**30, 3) for k, v in out.items()}

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--size', default='1.5b'); ap.add_argument('--out', default='bench/results/engine_sleep_sync.json')
    a = ap.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from grpo import build, meta
    from ftnb.engine import get_engine
    path = build(a.size)
    r = dict(meta=meta(), size=a.size, lora_r=16, steps={})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules='all-linear', task_type='CAUSAL_LM'))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02)
    r['mem_trainer_gib'] = used()
    eng = get_engine(model, 'vllm', sleep_level=1, sync='adapter', gpu_memory_utilization=0.3, max_model_len=512, max_num_seqs=32)
    llm = eng.llm
    r['mem_engine_awake_gib'] = used(); r['allocator_tags_gib'] = llm.collective_rpc(tag_bytes)[0]
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 151_000, (128,), generator=g).tolist() for _ in range(32)]
    gen = lambda: eng.generate(prompts, n=1, max_tokens=256, temperature=1.0, ignore_eos=True)
    greedy = lambda: [c[0] for c in eng.generate(prompts[:4], n=1, max_tokens=32, temperature=0.0)]
    S = r['steps']
    S['sync_adapter'] = timed(lambda: eng.sync(model, 'adapter'))
    d = Path(tempfile.mkdtemp(dir='/dev/shm'))
    S['adapter_files_only'] = timed(lambda: model.save_pretrained(d / 'x', selected_adapters=['default']))
    S['generate_adapter_32x256'] = timed(gen, 3)
    S['sync_merge'] = timed(lambda: eng.sync(model, 'merge'))
    S['generate_merged_32x256'] = timed(gen, 3)
    before = greedy()
    save = lambda: Path(a.out).write_text(json.dumps(r, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); save()
    def cycle(sleep, wake, label):
        ts, tw, mem = [], [], []
        for _ in range(3):
            torch.cuda.synchronize(); t0 = time.perf_counter(); sleep(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
            mem.append(used())
            t0 = time.perf_counter(); wake(); torch.cuda.synchronize(); tw.append(time.perf_counter() - t0)
        S[label] = dict(sleep_median_s=statistics.median(ts), wake_median_s=statistics.median(tw), asleep_used_gib=statistics.median(mem),
                        sleep_all_s=ts, wake_all_s=tw)
        save()
    cycle(lambda: llm.collective_rpc(kv_only_sleep), lambda: llm.wake_up(tags=['kv_cache']), 'kv_only')
    r['greedy_same_after_kv_only'] = greedy() == before; save()
    # wake tag by tag as ftnb's engine does (a plain wake_up() after level 1 broke the next generate on vLLM 0.26, first call)
    cycle(lambda: llm.sleep(level=1), lambda: (llm.wake_up(tags=['weights']), llm.wake_up(tags=['kv_cache'])), 'sleep1')
    r['greedy_same_after_sleep1'] = greedy() == before; save()
    cycle(lambda: llm.sleep(level=2), lambda: (llm.wake_up(tags=['weights']), eng.sync(model, 'merge'), llm.wake_up(tags=['kv_cache'])),
          'sleep2_then_merge_push')
    r['greedy_same_after_sleep2_push'] = greedy() == before
    r['mem_end_gib'] = used()
    print(json.dumps(r, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(r, indent=1))

if __name__ == '__main__':
    main()
