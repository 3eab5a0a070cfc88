"""Per-op benchmark of ftnb.lora_ops against the unfused path each op replaces (issue 12, item 3).

Ops at the exact Qwen2.5-1.5B shapes (hidden 1536, intermediate 8960, 12 query heads and 2 kv heads of 128, LoRA r 16
alpha 32), 8192 tokens, bf16 base weights with fp32 LoRA weights under bf16 autocast (as PEFT and a bf16 Trainer run):
- `linear_q`, `linear_o`: one projection (1536 -> 1536): `LoRALinearFn` vs PEFT's lora.Linear;
- `qkv`: q, k, v of one x: `LoRAQKVFn` vs three PEFT lora.Linear;
- `mlp`: the SwiGLU MLP: `LoRAMLPFn` vs Qwen2MLP's forward over three PEFT lora.Linear;
- `swiglu`: the elementwise part alone: ftnb's Triton kernels vs `F.silu(e) * g` under autograd.
Each way: forward time, forward+backward time (median of --iters after --warmup, CUDA synchronised), the memory held
after forward (what autograd keeps for backward, plus the outputs) and the peak over forward+backward, both above the
inputs and weights. Floors: the matmul FLOPs (base: forward and dX, no weight gradient; LoRA: forward, dX, dA, dB) at
--tflops (about 790 TFLOP/s dense bf16 on an H200), and the SwiGLU kernels' bytes at --tbps (about 4.8 TB/s).

GPU:       PYTHONPATH=$PWD python bench/lora_ops.py --out bench/results/lora_ops.json
CPU smoke: python bench/lora_ops.py --smoke --out /tmp/lora_ops.json   (tiny shapes, fp32, 2 iterations: plumbing only)
"""
import argparse, datetime, json, statistics, sys, time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ftnb import lora_ops as L

QWEN15 = dict(hidden=1536, inter=8960, q_out=12 * 128, kv_out=2 * 128, r=16, alpha=32, tokens=8192)
SMOKE = dict(hidden=72, inter=200, q_out=72, kv_out=24, r=5, alpha=8, tokens=64)


PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']

class Block(nn.Module):
    "The projections of one decoder layer, as Qwen2 has them (a bias on q, k, v)."
    def __init__(self, s):
        super().__init__()
        h, i = s['hidden'], s['inter']
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(h, s['q_out']), nn.Linear(h, s['kv_out']), nn.Linear(h, s['kv_out'])
        self.o_proj = nn.Linear(s['q_out'], h, bias=False)
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False), nn.Linear(i, h, bias=False)

def block(s, dev, base_dtype):
    "A Block with PEFT LoRA on every projection: base in `base_dtype` (frozen), LoRA in fp32 with a random B."
    from peft import LoraConfig, inject_adapter_in_model
    torch.manual_seed(0)
    m = Block(s).to(dev, base_dtype)
    m = inject_adapter_in_model(LoraConfig(r=s['r'], lora_alpha=s['alpha'], lora_dropout=0.0, target_modules=PROJ), m)
    for n, p in m.named_parameters():
        if 'lora_' in n:
            p.data = p.data.float(); p.requires_grad_(True)
            if 'lora_B' in n: nn.init.normal_(p, std=0.02)
        else: p.requires_grad_(False)
    return m


def lora_flops(n, i, o, r) -> tuple[int, int]:
    "(forward, forward+backward) matmul FLOPs of one LoRA projection over n tokens; no gradient for the frozen W."
    base, lora = 2 * n * i * o, 2 * n * r * (i + o)  # x W^T; x A^T then (xA^T) B^T
    return base + lora, 2 * base + 3 * lora           # backward: dX = dY W (base) and dY B, (dY B) A, dA, dB (LoRA, 2x forward's)

def ops(m, s, dev):
    "name -> (inputs maker, unfused fn, fused fn, (fwd FLOPs, fwd+bwd FLOPs), SwiGLU bytes (fwd, fwd+bwd) or None)."
    n, h, i, r = s['tokens'], s['hidden'], s['inter'], s['r']
    def x_of(d): return lambda dt: [torch.randn(n, d, device=dev, dtype=dt, requires_grad=True)]
    fl = lambda *shapes: tuple(map(sum, zip(*(lora_flops(n, a, b, r) for a, b in shapes))))
    mlp_unfused = lambda x: m.down_proj(F.silu(m.gate_proj(x)) * m.up_proj(x))  # Qwen2MLP.forward over PEFT's layers
    def mlp_fused(x): return L.fused(L.LoRAMLPFn, x, *L._parts((m.gate_proj, m.up_proj, m.down_proj)))
    def qkv_fused(x): return L.fused(L.LoRAQKVFn, x, *L._parts((m.q_proj, m.k_proj, m.v_proj)))
    def lin_fused(p): return lambda x: L.fused(L.LoRALinearFn, x, *L.lora_parts(p))
    def eg(dt): return [torch.randn(n, i, device=dev, dtype=dt, requires_grad=True) for _ in range(2)]
    el = torch.finfo(torch.bfloat16).bits // 8 if dev == 'cuda' else 4
    return {
        'linear_q': (x_of(h), m.q_proj, lin_fused(m.q_proj), fl((h, s['q_out'])), None),
        'linear_o': (x_of(s['q_out']), m.o_proj, lin_fused(m.o_proj), fl((s['q_out'], h)), None),
        'qkv': (x_of(h), lambda x: (m.q_proj(x), m.k_proj(x), m.v_proj(x)), qkv_fused, fl((h, s['q_out']), (h, s['kv_out']), (h, s['kv_out'])), None),
        'mlp': (x_of(h), mlp_unfused, mlp_fused, fl((h, i), (h, i), (i, h)), None),
        'swiglu': (eg, lambda e, g: F.silu(e) * g, SwigluFn.apply, (0, 0), (3 * n * i * el, 9 * n * i * el))}

class SwigluFn(torch.autograd.Function):
    "The SwiGLU kernels alone under autograd: `swiglu` forward, `swiglu_bwd` (h, de, dg in one pass) backward."
    @staticmethod
    def forward(ctx, e, g): ctx.save_for_backward(e, g); return L.swiglu(e, g)
    @staticmethod
    def backward(ctx, dh): e, g = ctx.saved_tensors; _, de, dg = L.swiglu_bwd(dh, e, g); return de, dg


def sync(dev):
    if dev == 'cuda': torch.cuda.synchronize()

def timed(f, dev, iters, warm) -> float:
    "Median milliseconds of `f()` over `iters` calls after `warm` calls."
    ts = []
    for k in range(warm + iters):
        sync(dev); t = time.perf_counter(); f(); sync(dev)
        if k >= warm: ts.append(1e3 * (time.perf_counter() - t))
    return statistics.median(ts)

def measure(make, fn, dev, dt, iters, warm, ac) -> dict:
    "Forward and forward+backward times, memory after forward and peak (MiB above inputs and weights; None on a CPU), the output."
    torch.manual_seed(1); ins = make(dt)  # the same inputs for both ways
    outs = lambda y: y if isinstance(y, tuple) else (y,)
    def fwd():
        with torch.no_grad(), ac(): fn(*ins)
    def step():
        with ac(): ys = outs(fn(*ins))
        torch.autograd.backward(ys, [torch.ones_like(y) for y in ys])
        for t in ins: t.grad = None
    row = dict(fwd_ms=timed(fwd, dev, iters, warm), fwd_bwd_ms=timed(step, dev, iters, warm))
    with ac(): y = outs(fn(*ins))
    if dev == 'cuda':
        del y; sync(dev); torch.cuda.empty_cache(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        with ac(): y = outs(fn(*ins))
        after = torch.cuda.memory_allocated()
        torch.autograd.backward(y, [torch.ones_like(t) for t in y]); sync(dev)
        row.update(after_fwd_mib=(after - base) / 2**20, peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20)
        for t in ins: t.grad = None
        with ac(): y = outs(fn(*ins))
    else: row.update(after_fwd_mib=None, peak_mib=None)
    return row, [t.detach().float() for t in y]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True, help='JSON file to write')
    ap.add_argument('--iters', type=int, default=20); ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--tflops', type=float, default=790.0, help='dense bf16 TFLOP/s of the GPU (H200: about 790)')
    ap.add_argument('--tbps', type=float, default=4.8, help='memory bandwidth in TB/s (H200: about 4.8)')
    ap.add_argument('--ops', default='linear_q,linear_o,qkv,mlp,swiglu')
    ap.add_argument('--smoke', action='store_true', help='CPU: tiny shapes, fp32, 2 iterations (plumbing only)')
    a = ap.parse_args(argv)
    dev = 'cpu' if a.smoke or not torch.cuda.is_available() else 'cuda'
    if dev == 'cpu' and not a.smoke: ap.error('no CUDA GPU: run with --smoke on a CPU')
    s = SMOKE if a.smoke else QWEN15
    iters, warm = (2, 1) if a.smoke else (a.iters, a.warmup)
    dt = torch.float32 if a.smoke else torch.bfloat16
    ac = (lambda: torch.autocast('cuda', dtype=torch.bfloat16)) if dev == 'cuda' else nullcontext
    m, rows = block(s, dev, dt), []
    table = ops(m, s, dev)
    for name in a.ops.split(','):
        make, unfused, fusedf, (f_fwd, f_all), by = table[name]
        res = {}
        for way, fn in (('unfused', unfused), ('fused', fusedf)):
            row, y = measure(make, fn, dev, dt, iters, warm, ac)
            res[way] = y
            err = max((a_ - b_).abs().max().item() for a_, b_ in zip(y, res['unfused']))
            floor = {}
            if f_all: floor = dict(flops_fwd=f_fwd, flops_fwd_bwd=f_all, floor_fwd_ms=1e3 * f_fwd / (a.tflops * 1e12),
                                   floor_fwd_bwd_ms=1e3 * f_all / (a.tflops * 1e12))
            if by: floor = dict(bytes_fwd=by[0], bytes_fwd_bwd=by[1], floor_fwd_ms=1e3 * by[0] / (a.tbps * 1e12), floor_fwd_bwd_ms=1e3 * by[1] / (a.tbps * 1e12))
            if floor: floor.update(pct_of_floor_fwd=100 * floor['floor_fwd_ms'] / row['fwd_ms'], pct_of_floor_fwd_bwd=100 * floor['floor_fwd_bwd_ms'] / row['fwd_bwd_ms'])
            rows.append(dict(op=name, way=way, **row, max_abs_err=err, **floor))
            print(json.dumps(rows[-1]), flush=True)
    by = {(r['op'], r['way']): r for r in rows}
    summary = [dict(op=o, fwd_speedup=by[o, 'unfused']['fwd_ms'] / by[o, 'fused']['fwd_ms'],
                    fwd_bwd_speedup=by[o, 'unfused']['fwd_bwd_ms'] / by[o, 'fused']['fwd_bwd_ms'],
                    peak_ratio=(by[o, 'fused']['peak_mib'] / by[o, 'unfused']['peak_mib']) if by[o, 'unfused']['peak_mib'] else None,
                    fused_pct_of_floor_fwd_bwd=by[o, 'fused'].get('pct_of_floor_fwd_bwd')) for o in a.ops.split(',')]
    import peft, transformers
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device=torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu',
               versions=dict(torch=torch.__version__, peft=peft.__version__, transformers=transformers.__version__,
                             triton=getattr(L.triton, '__version__', None)),
               setup=dict(shapes=s, dtype=str(dt), lora_dtype='float32', autocast=dev == 'cuda', iters=iters, warmup=warm,
                          tflops=a.tflops, tbps=a.tbps, triton_swiglu=dev == 'cuda' and L.triton is not None),
               rows=rows, summary=summary)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    for r in summary: print('SUMMARY', json.dumps(r))

if __name__ == '__main__': main()
