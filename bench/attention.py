"""Packed batches without cross-talk: which attention pays (issue 12, item 4, "pick by measurement").

One LoRA training step (forward + backward, no optimizer) of the exact Qwen2.5 config (random bf16 weights, vocabulary
151,936, LoRA r16 on all linear layers, through PEFT) on the same samples, three ways:
- `padded`: the samples in rows padded to the longest (an attention mask), SDPA;
- `packed_sdpa`: one row of the concatenated samples with position ids restarting at each sample (padding-free, what
  TRL's padding_free collator makes); transformers turns the position ids into a block-diagonal 4D mask for SDPA;
- `packed_flex`: the same row with `attn_implementation='flex_attention'` (a BlockMask; torch compiles the kernel).
Batches: `mixed` (bench/sft.py's log-normal lengths, median seq/4) and `equal` (every sample `seq` tokens), about
`--tokens` real tokens each. Reported: median seconds of a step over `--iters` after `--warmup`, real tokens/s, peak
allocated memory, and the largest difference of the packed ways' per-sample losses from the padded way's (the same
samples must give the same loss). Each way runs in its own process. On the GPU machine:
    PYTHONPATH=/tmp/site:$PWD python bench/attention.py --size 1.5b --out $OUT/attention.json
CPU plumbing check (tiny shape, fp32; flex skipped where torch cannot compile it): python bench/attention.py --smoke
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT/'bench')]
WAYS = ('padded', 'packed_sdpa', 'packed_flex')

def samples(seq:int, batch:str, tokens:int, vocab:int) -> list[list[int]]:
    "Token ids of samples whose lengths follow bench/sft.py's `lengths`, about `tokens` real tokens in all."
    import random
    from sft import lengths
    ls = [l for l in lengths(seq, 4 * max(1, tokens // seq) * 8, batch)]
    out, total, rng = [], 0, random.Random(1)
    for l in ls:
        if total + l > tokens: break
        out.append([rng.randrange(vocab // 8, vocab - vocab // 8) for _ in range(l)]); total += l
    return out

def step_inputs(way:str, ids:list[list[int]], dev):
    import torch
    if way == 'padded':
        n = max(map(len, ids))
        x = torch.tensor([s + [0] * (n - len(s)) for s in ids], device=dev)
        m = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in ids], device=dev)
        lab = x.masked_fill(m == 0, -100)
        return dict(input_ids=x, attention_mask=m), lab
    x = torch.tensor([sum(ids, [])], device=dev)
    pos = torch.tensor([sum((list(range(len(s))) for s in ids), [])], device=dev)
    lab = x.clone(); lab[0, torch.cumsum(torch.tensor([0] + [len(s) for s in ids[:-1]]), 0)] = -100  # no target across a boundary
    return dict(input_ids=x, position_ids=pos), lab

def per_sample_loss(logits, lab, ids, way) -> list[float]:
    "Mean next-token loss of each sample (its own tokens only)."
    import torch.nn.functional as F
    out, off = [], 0
    for i, s in enumerate(ids):
        if way == 'padded': lg, lb = logits[i, :len(s) - 1], lab[i, 1:len(s)]
        else: lg, lb = logits[0, off:off + len(s) - 1], lab[0, off + 1:off + len(s)]; off += len(s)
        out.append(F.cross_entropy(lg.float(), lb).item())
    return out

def run_one(size:str, way:str, seq:int, batch:str, tokens:int, iters:int, warmup:int, smoke:bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    from grpo import QWEN, SIZES
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    dtype = torch.float32 if smoke else torch.bfloat16
    vocab = 512 if smoke else QWEN['vocab_size']
    cfg = AutoConfig.for_model("qwen2", **{**QWEN, **SIZES[size], "vocab_size": vocab, **({"bos_token_id": 1, "eos_token_id": 2} if smoke else {})})
    cfg._attn_implementation = 'flex_attention' if way == 'packed_flex' else 'sdpa'
    torch.manual_seed(0)
    with torch.device(dev): model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=cfg._attn_implementation)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
    for n, p in model.named_parameters():
        if 'lora_B' in n: torch.nn.init.normal_(p, std=0.02)  # a live adapter, so that its gradients are not trivially zero
    ids = samples(seq, batch, tokens, vocab)
    inp, lab = step_inputs(way, ids, dev)
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    with torch.no_grad(): losses = per_sample_loss(model(**inp, use_cache=False).logits, lab, ids, way)  # a cache turns off transformers' packed-sequence masks
    if dev == 'cuda': torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + iters):
        sync(); t0 = time.perf_counter()
        out = model(**inp, labels=lab, use_cache=False); out.loss.backward(); model.zero_grad(set_to_none=True)
        sync(); times.append(time.perf_counter() - t0)
    real = sum(map(len, ids)); t = statistics.median(times[warmup:])
    return dict(size=size, way=way, seq=seq, batch=batch, samples=len(ids), real_tokens=real, slots=inp['input_ids'].numel(),
                s_per_step=t, tokens_per_s=real / t, step_times=[round(x, 4) for x in times],
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev == 'cuda' else None, losses=losses)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', default='1.5b'); ap.add_argument('--seq', type=int, default=1024); ap.add_argument('--batches', default='mixed,equal')
    ap.add_argument('--tokens', type=int, default=8192); ap.add_argument('--iters', type=int, default=10); ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--ways', default=','.join(WAYS)); ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--out', default=os.path.join(os.environ.get('OUT', 'bench/results'), 'attention.json')); ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.smoke: a.size, a.seq, a.tokens, a.iters, a.warmup = 'tiny', 64, 256, 2, 1
    if a.one:
        way, batch = a.one.split(':')
        print('RESULT ' + json.dumps(run_one(a.size, way, a.seq, batch, a.tokens, a.iters, a.warmup, a.smoke)), flush=True); return
    import importlib.metadata as md
    res = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), versions={p: md.version(p) for p in ('torch', 'transformers', 'peft')},
               args=vars(a), runs=[])
    try: res['device'] = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError: res['device'] = 'cpu'
    for batch in a.batches.split(','):
        for way in a.ways.split(','):
            cmd = [sys.executable, __file__, '--one', f'{way}:{batch}', '--size', a.size, '--seq', str(a.seq), '--tokens', str(a.tokens),
                   '--iters', str(a.iters), '--warmup', str(a.warmup)] + (['--smoke'] if a.smoke else [])
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
            r = json.loads(line[-1][7:]) if line else dict(way=way, batch=batch, error=(p.stderr or p.stdout)[-2000:])
            res['runs'].append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ('step_times', 'losses', 'error')}), r.get('error', '')[-1500:], flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))  # kept if the call is cut
    base = {r['batch']: r['losses'] for r in res['runs'] if r.get('way') == 'padded' and 'losses' in r}
    res['summary'] = [dict(batch=r['batch'], way=r['way'], tokens_per_s=r['tokens_per_s'], peak_gib=r['peak_gib'], s_per_step=r['s_per_step'],
                           loss_gap_vs_padded=max(abs(x - y) for x, y in zip(r['losses'], base[r['batch']])) if r['batch'] in base else None)
                      for r in res['runs'] if 'losses' in r]
    for s in res['summary']: print('SUMMARY', json.dumps(s))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))

if __name__ == '__main__':
    main()
