"""Full fine-tuning of the Qwen2.5-1.5B shape on 1 GPU, and on 2 with FSDP2 (and DDP): tokens/s per GPU (issue 13, item 4).

Run on a machine with two or more GPUs, from the repository root:
    PYTHONPATH=$PWD python bench/multi_gpu.py --out bench/results/multi_gpu.json
With fewer than two GPUs it says so and exits 0 without writing anything. NOT RUN YET: no machine with two GPUs has
been lent, so no number from it is quoted anywhere.

The model is bench/grpo.py's exact Qwen2.5-1.5B config (random bf16 weights, vocabulary 151,936, tied embeddings) with
its local byte-level tokenizer (no merges: one byte = one token). Every sample is plain text of exactly --max-length
bytes, so every step trains on batch_size x max_length x nproc tokens, no padding. Each way is one `ftnb train CONFIG
--nproc N` process (a fresh one: the launcher forks, and a fork cannot carry a GPU already in use):
- 1gpu: one process, plain training (accel.fsdp changes nothing in one process);
- 2gpu_fsdp: two processes, accel.fsdp=true (FSDP2 full shard, checkpoints gathered whole);
- 2gpu_ddp: two processes, DDP (each holds the whole model and AdamW state: ~24 GB at 1.5B, fits an H100/H200).
Step time: from rank 0's metrics.jsonl (logging_steps=1), the median gap between consecutive step rows after --warmup
steps. Tokens/s per GPU = batch_size x max_length x nproc / step time / nproc. Scaling = (2-GPU tokens/s) / (1-GPU).
No checkpoint is saved inside the timed steps (save_steps > max_steps); the final save happens after them.
"""
import argparse, json, os, random, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))

def samples(path:Path, n:int, length:int) -> Path:
    "n plain-text samples of exactly `length` bytes (= tokens with the merge-free tokenizer)."
    rng = random.Random(0); letters = 'abcdefghijklmnopqrstuvwxyz0123456789 '
    path.write_text(''.join(json.dumps({'text': ''.join(rng.choice(letters) for _ in range(length))}) + '\n' for _ in range(n)))
    return path

def config(model:Path, data:Path, out:Path, name:str, a, fsdp:bool) -> Path:
    import yaml
    cfg = {'model': {'name_or_path': str(model), 'dtype': 'float32' if a.cpu else 'bfloat16'},
           'data': {'path': str(data), 'format': 'text', 'max_length': a.max_length, 'too_long': 'truncate', 'eval_fraction': 0},
           'adapter': {'method': 'full'}, 'method': {'name': 'pretrain'},
           'train': {'output_dir': str(out), 'run_name': name, 'batch_size': a.batch_size, 'lr': 2e-5, 'max_steps': a.steps,
                     'logging_steps': 1, 'save_steps': a.steps + 1, 'save_total_limit': 1, 'seed': 0},
           'accel': {'fsdp': fsdp, 'gradient_checkpointing': a.checkpointing}}
    p = out/f'{name}.yaml'; p.write_text(yaml.safe_dump(cfg)); return p

def run(cfg:Path, nproc:int) -> dict:
    "One `ftnb train` process; its step times from metrics.jsonl."
    t0 = time.perf_counter()
    cmd = [sys.executable, '-c', 'import sys; from ftnb.cli import main; main(sys.argv[1:])', 'train', str(cfg), '--nproc', str(nproc)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode: return dict(error=(p.stderr or p.stdout)[-3000:], wall_s=wall)
    import yaml
    c = yaml.safe_load(cfg.read_text()); d = Path(c['train']['output_dir'])/c['train']['run_name']
    rows = [json.loads(l) for l in (d/'metrics.jsonl').read_text().splitlines()]
    t = {r['step']: r['time'] for r in rows if 'loss' in r}  # one row per step (logging_steps=1)
    steps = sorted(t)
    return dict(step_times_s=[t[b] - t[a] for a, b in zip(steps, steps[1:])], losses=[r['loss'] for r in rows if 'loss' in r], wall_s=wall)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT/'bench/results/multi_gpu.json'))
    ap.add_argument('--ways', default='1gpu,2gpu_fsdp,2gpu_ddp')
    ap.add_argument('--steps', type=int, default=12); ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--batch-size', type=int, default=4); ap.add_argument('--max-length', type=int, default=1024)
    ap.add_argument('--checkpointing', action='store_true', help='activation checkpointing on (FSDP2: its own)')
    ap.add_argument('--size', default='1.5b', help="bench/grpo.py's sizes; 'tiny' with --cpu checks the plumbing on a CPU")
    ap.add_argument('--cpu', action='store_true', help='plumbing check on a CPU: gloo processes, DDP only (accelerate runs FSDP on GPUs only)')
    a = ap.parse_args()
    import torch
    n = torch.cuda.device_count()  # NVML: does not initialise CUDA in this process, whose GPUs the runs need
    if n < 2 and not a.cpu: print(f'bench/multi_gpu.py: {n} GPU(s) here, 2 needed: nothing measured'); return 0
    from grpo import WORK, meta
    # the model is built in a child process too: built here, its weights would stay on GPU 0 during the runs
    subprocess.run([sys.executable, '-c', f'from grpo import build; build({a.size!r})'], check=True, cwd=ROOT/'bench',
                   env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), str(ROOT/'bench'), os.environ.get('PYTHONPATH', '')])})
    model = WORK/a.size
    work = WORK/'multi_gpu'; work.mkdir(parents=True, exist_ok=True)
    data = samples(work/'text.jsonl', a.batch_size * 2 * (a.steps + 2), a.max_length)
    ways = {'1gpu': (1, False), '2gpu_fsdp': (2, True), '2gpu_ddp': (2, False)}
    if a.cpu: a.ways = ','.join(w for w in a.ways.split(',') if w != '2gpu_fsdp')
    res = dict(size=a.size, gpus=n, batch_size=a.batch_size, max_length=a.max_length,
               steps=a.steps, warmup=a.warmup, checkpointing=a.checkpointing, runs={})
    for w in a.ways.split(','):
        nproc, fsdp = ways[w]
        r = run(config(model, data, work, f'{w}-{int(time.time())}', a, fsdp), nproc)
        st = r.get('step_times_s', [])[a.warmup:]
        if st:
            r['median_step_s'] = statistics.median(st)
            r['tokens_per_s_per_gpu'] = a.batch_size * a.max_length / r['median_step_s']  # each GPU trains batch_size x max_length a step
        res['runs'][w] = r; print(w, {k: v for k, v in r.items() if k not in ('step_times_s', 'losses')}, flush=True)
    base = res['runs'].get('1gpu', {}).get('tokens_per_s_per_gpu')
    res['meta'] = meta()  # after the runs: it opens a CUDA context here
    res['summary'] = {w: dict(tokens_per_s_per_gpu=r.get('tokens_per_s_per_gpu'), median_step_s=r.get('median_step_s'),
                              scaling_vs_1gpu=(2 * r['tokens_per_s_per_gpu'] / base) if base and r.get('tokens_per_s_per_gpu') and w != '1gpu' else None,
                              error=r.get('error', '')[-300:] or None)
                      for w, r in res['runs'].items()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res['summary'], indent=2))
    return 0

if __name__ == '__main__': sys.exit(main())
