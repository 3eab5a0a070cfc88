"""LoRA SFT throughput and memory at real model shapes: TRL+PEFT against ftnb, each acceleration, ways interleaved.

Run on the GPU machine (shared/gpu/README.md), from the repository root, one call per (size, seq) or so:
    PYTHONPATH=/tmp/site:$PWD python bench/sft.py --sizes 1.5b --seqs 1024 --batches mixed,equal --reps 3 --out $OUT/sft.json
A CPU smoke run of the whole path (tiny config and vocabulary, 2 steps, 1 rep, the ways that need no GPU):
    python bench/sft.py --smoke --out /tmp/sft-smoke.json

Setup, the same for every way:
- the exact Qwen2.5-0.5B / 1.5B / 3B configs (bench/grpo.py's `SIZES`), random bf16 weights, vocabulary 151,936, tied
  embeddings; bench/grpo.py's local byte-level tokenizer with 151,936 entries and no merges (each ASCII byte is one token);
- prompt/completion samples of plain text (no chat template): the loss is on the completion (TRL's default for
  prompt-completion data, ftnb's `data.completion_only`); a sample of L tokens is a prompt of L/4 bytes, a completion,
  and the end token;
- `--batches mixed`: sample lengths drawn from a right-skewed log-normal (`MIXED`: median seq/4, sigma 0.9, clipped to
  [32, seq]; mean about 0.36 x seq), the shape of chat SFT sets, where most samples are short and a few are long, so a
  padded batch costs what padding costs in practice. `--batches equal`: every sample exactly seq tokens;
- samples per step: `--tokens-per-step // seq` (8 x 1024, 2 x 4096 by default). A packed way trains rows of seq tokens;
  it gets round(samples x mean length / seq) rows per step, so that its real tokens per step match the other ways';
- LoRA r16 alpha 32 dropout 0 on all linear layers, lr 2e-4, logging every 10 steps, no checkpoints, seed 0; gradient
  checkpointing off for every way unless `--gc on` (or `--gc default`: each library's default, TRL on, ftnb off).
- Ways (`WAYS`): `trl` = SFTTrainer + PEFT at TRL's defaults; `trl_liger` = + `use_liger_kernel` (TRL 1.16 applies
  Liger's RMSNorm, RoPE and SwiGLU and refuses its fused linear cross-entropy: its own chunked LM head already avoids the
  logits); `trl_liger_pf` = + `padding_free`; `trl_liger_pack` = + `packing` (bfd); `ftnb` = ftnb.train through its
  RunConfig; `ftnb_liger` = + `accel.liger`; `ftnb_best` = + `data.padding_free` (the best combination ftnb has today);
  `ftnb_liger_pack` = `accel.liger` + `data.packing`; `trl_pf`, `ftnb_pf` = padding-free without Liger (they run on a CPU);
  `ftnb_fused` = + `accel.fused_lora` (ftnb.lora_ops: fused LoRA q/k/v, o_proj and SwiGLU MLP; runs on a CPU too);
  `ftnb_fused_liger` = `accel.fused_lora` + `accel.liger` (fused_lora owns the MLP, Liger keeps its RMSNorm and RoPE).
  Padding-free and packed batches run on SDPA: transformers builds a block-diagonal mask from the position ids, so samples do
  not attend to each other (no flash-attn package on the GPU machine).
- Each run is its own process. Within a (size, seq, batch) group the ways run interleaved, rep after rep, with the order
  rotated each rep (A B C, B C A, C A B) since the way run first in a call was faster on the H200; ratios are per rep.

Reported per run: tokens/s = real (non-pad) tokens of a step / its wall time (CUDA synchronised at step start and end),
median over the steps after `--warmup`; peak memory from torch.cuda.max_memory_allocated in the child (`peak_gib`) and
device-wide from `nvidia-smi` sampled every 50 ms by this parent process (`smi_peak_gib`, every process on the GPU). The
top-level `summary` has one entry per (size, seq, batch, way): medians over the reps.
"""
import argparse, importlib.metadata as md, json, math, os, random, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT/'bench')]
import grpo  # the model shapes, the local tokenizer, the nvidia-smi sampler (bench/grpo.py)
from grpo import QWEN, SIZES, VOCAB, SmiPeak, med, params_m

WORK = Path(os.environ.get('FTNB_BENCH_DIR', '/tmp/ftnb-bench'))
MIXED = dict(dist='lognormal', median_frac=0.25, sigma=0.9, min_tokens=32, prompt_frac=0.25, seed=0)
WAYS = {  # name: (library, liger, padding_free, packing, fused_lora)
    'trl': ('trl', False, False, False, False), 'trl_pf': ('trl', False, True, False, False), 'trl_liger': ('trl', True, False, False, False),
    'trl_liger_pf': ('trl', True, True, False, False), 'trl_liger_pack': ('trl', True, False, True, False),
    'ftnb': ('ftnb', False, False, False, False), 'ftnb_pf': ('ftnb', False, True, False, False), 'ftnb_liger': ('ftnb', True, False, False, False),
    'ftnb_best': ('ftnb', True, True, False, False), 'ftnb_liger_pack': ('ftnb', True, False, True, False),
    'ftnb_fused': ('ftnb', False, False, False, True), 'ftnb_fused_liger': ('ftnb', True, False, False, True)}
DEFAULT_WAYS = 'trl,trl_liger,trl_liger_pf,ftnb,ftnb_liger,ftnb_best'
SMOKE_WAYS = 'trl,trl_pf,ftnb,ftnb_pf,ftnb_fused'  # no Liger on a CPU
SMOKE_VOCAB = 512
LETTERS = 'abcdefghijklmnopqrstuvwxyz0123456789'

def lengths(seq:int, n:int, batch:str) -> list[int]:
    "Token lengths of `n` samples (end token included): all `seq` for 'equal', MIXED's log-normal for 'mixed'."
    if batch == 'equal': return [seq]*n
    rng, m = random.Random(MIXED['seed']), MIXED
    return [max(m['min_tokens'], min(seq, round(rng.lognormvariate(math.log(seq*m['median_frac']), m['sigma'])))) for _ in range(n)]

def data_file(seq:int, batch:str, n:int) -> Path:
    "A prompt/completion JSONL whose samples have `lengths(seq, n, batch)` tokens with the local tokenizer (one per byte, + end)."
    p = WORK/f'sft_{batch}_{seq}_{n}.jsonl'
    if p.exists(): return p
    p.parent.mkdir(parents=True, exist_ok=True); rng = random.Random(1)
    rows = []
    for L in lengths(seq, n, batch):
        k = max(4, round(L*MIXED['prompt_frac'])); c = L - 1 - k  # prompt bytes, completion bytes; + 1 end token
        rows.append(json.dumps({'prompt': ''.join(rng.choice(LETTERS) for _ in range(k)), 'completion': ''.join(rng.choice(LETTERS) for _ in range(c))}))
    tmp = p.with_suffix('.tmp'); tmp.write_text('\n'.join(rows) + '\n'); tmp.replace(p)
    return p

def small_tokenizer(n:int=SMOKE_VOCAB):
    "The smoke run's tokenizer: grpo.tokenizer's kind (byte-level BPE, no merges) with `n` entries: 256 bytes, Qwen's 3 special tokens, fillers."
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a in alphabet:
        if len(vocab) >= n - 3: break
        vocab['x' + a] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False); tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(['<|endoftext|>', '<|im_start|>', '<|im_end|>'])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='<|endoftext|>', pad_token='<|endoftext|>')
    assert len(tok) == n, len(tok)
    return tok

def build(size:str) -> Path:
    "The saved random-weight model of `size`: grpo.build for the Qwen2.5 sizes, a tiny one (vocabulary 512, float32) for 'tiny'."
    if size != 'tiny': return grpo.build(size)
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    path = WORK/'tiny-sft'
    if (path/'config.json').exists(): return path
    tok = small_tokenizer()
    cfg = Qwen2Config(**{**QWEN, 'vocab_size': len(tok), 'bos_token_id': tok.eos_token_id, 'eos_token_id': tok.eos_token_id},
                      **SIZES['tiny'], pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    m.save_pretrained(path); tok.save_pretrained(path)
    return path

class Probe:
    "In the child: real tokens of each step (counted in Trainer.training_step), step wall times (CUDA synchronised), peak memory."
    def __init__(self):
        import torch, transformers
        from transformers import TrainerCallback
        self.torch, self.cuda, self.t, self.tokens, self.trained, self.slots = torch, torch.cuda.is_available(), [], [], [], []
        orig, probe = transformers.Trainer.training_step, self
        def training_step(tr, model, inputs, *a, **k):  # before the loss: count the batch's real tokens (no host sync here)
            ids = inputs['input_ids']
            probe.tokens.append(inputs['attention_mask'].sum() if inputs.get('attention_mask') is not None else ids.numel())
            probe.trained.append((inputs['labels'] != -100).sum()); probe.slots.append(ids.numel())
            return orig(tr, model, inputs, *a, **k)
        transformers.Trainer.training_step = training_step  # the class: ftnb's and TRL's trainers both reach it through super()
        class CB(TrainerCallback):
            def on_train_begin(s, args, state, control, **kw):
                if probe.cuda: probe.torch.cuda.synchronize(); probe.before_gib = probe.torch.cuda.memory_allocated() / 2**30
            def on_step_begin(s, args, state, control, **kw):
                if probe.cuda: probe.torch.cuda.synchronize()
                probe.t0 = time.perf_counter()
            def on_step_end(s, args, state, control, **kw):
                if probe.cuda: probe.torch.cuda.synchronize()
                probe.t.append(time.perf_counter() - probe.t0)
        self.callback, self.before_gib = CB(), None
    def summary(self, warm:int) -> dict:
        n = lambda x: int(x.item()) if hasattr(x, 'item') else int(x)
        tokens, trained, slots = [n(x) for x in self.tokens], [n(x) for x in self.trained], self.slots
        rate = [k / t for k, t in zip(tokens[warm:], self.t[warm:])]
        peak = self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return dict(steps=len(self.t), tokens_per_s=statistics.median(rate) if rate else None, step_times=[round(t, 4) for t in self.t],
                    tokens_per_step=statistics.median(tokens[warm:]) if rate else None, tokens=tokens, trained_tokens=trained,
                    pad_fraction=1 - sum(tokens) / sum(slots) if slots else None, peak_gib=peak, model_gib=self.before_gib,
                    peak_reserved_gib=self.torch.cuda.max_memory_reserved() / 2**30 if self.cuda else None)

def plan(seq:int, batch:str, tokens_per_step:int, pack:bool, steps:int) -> tuple[int, int]:
    "(samples or packed rows per step, samples in the data file) for a way."
    per = max(1, tokens_per_step // seq)
    n = per * (steps + 2)
    if not pack: return per, n
    mean = statistics.mean(lengths(seq, n, batch))
    return max(1, round(per * mean / seq)), n

def run_way(size:str, seq:int, batch:str, way:str, steps:int, warm:int, tokens_per_step:int, gc:str, smoke:bool) -> dict:
    "One run in this process."
    import torch
    lib, liger, pf, pack, fused = WAYS[way]
    path = build(size)
    per, n = plan(seq, batch, tokens_per_step, pack, steps)
    data = data_file(seq, batch, n)
    probe = Probe()
    name = f'{way}-{size}-{seq}-{batch}-{os.getpid()}'
    if lib == 'ftnb':
        from ftnb import train
        from ftnb.config import RunConfig
        accel = {'liger': liger, 'fused_lora': fused, **({} if gc == 'default' else {'gradient_checkpointing': gc == 'on'})}
        cfg = RunConfig.model_validate({'model': {'name_or_path': str(path), 'dtype': 'float32' if smoke else 'bfloat16'},
            'data': {'path': str(data), 'format': 'prompt_completion', 'eval_fraction': 0, 'max_length': seq, 'padding_free': pf, 'packing': pack},
            'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
            'train': {'output_dir': str(WORK/'runs'), 'run_name': name, 'max_steps': steps, 'batch_size': per, 'lr': 2e-4,
                      'logging_steps': 10, 'save_steps': 100_000, 'seed': 0}, 'accel': accel})
        tr = train(cfg, callbacks=[probe.callback]).trainer
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if smoke else torch.bfloat16)
        ds = Dataset.from_list([json.loads(l) for l in data.read_text().splitlines()])
        kw = dict(output_dir=str(WORK/'runs'/name), max_steps=steps, per_device_train_batch_size=per, learning_rate=2e-4,
                  max_length=None if pf and not pack else seq, padding_free=pf, packing=pack, use_liger_kernel=liger,
                  report_to='none', save_strategy='no', seed=0, bf16=not smoke, use_cpu=smoke)
        if gc != 'default': kw['gradient_checkpointing'] = gc == 'on'
        tr = SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=ds, processing_class=tok, callbacks=[probe.callback],
                        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
        tr.train()
    a = tr.args
    return dict(size=size, seq=seq, batch=batch, way=way, params_m=params_m(path), batch_size=per, packed=pack, padding_free=pf, fused_lora=fused,
                liger=bool(a.use_liger_kernel), gradient_checkpointing=bool(a.gradient_checkpointing),
                device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', **probe.summary(warm))

def meta(a) -> dict:
    "Date, device and versions, read without initialising CUDA in this parent process (its context would count in every nvidia-smi sample)."
    def v(p):
        try: return md.version(p)
        except md.PackageNotFoundError: return None
    try: smi = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (FileNotFoundError, subprocess.TimeoutExpired): smi = None
    return dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), device=smi.split(',')[0] if smi else 'cpu', nvidia_smi=smi,
                versions={p: v(p) for p in ('torch', 'transformers', 'peft', 'trl', 'liger-kernel', 'torchao', 'accelerate', 'datasets')},
                setup=dict(vocab_size=SMOKE_VOCAB if a.smoke else VOCAB, lora=dict(r=16, alpha=32, dropout=0.0, target_modules='all-linear'),
                           lr=2e-4, tokens_per_step=a.tokens_per_step, steps=a.steps, warmup=a.warmup, gradient_checkpointing=a.gc,
                           mixed_lengths=MIXED, equal_lengths='every sample exactly seq tokens', order=a.order, ways={w: WAYS[w] for w in a.ways.split(',')},
                           ways_columns='(library, liger, padding_free, packing)', attention='sdpa'))

def summarize(runs:list[dict]) -> list[dict]:
    "One entry per (size, seq, batch, way): medians over its reps; ratios are per rep against the TRL way(s) of that rep."
    out, ok = [], [r for r in runs if r.get('tokens_per_s')]
    for key in dict.fromkeys((r['size'], r['seq'], r['batch']) for r in runs):
        group = [r for r in ok if (r['size'], r['seq'], r['batch']) == key]
        rep = {}
        for r in group: rep.setdefault(r['rep'], {})[r['way']] = r['tokens_per_s']
        tps = lambda w: med([r['tokens_per_s'] for r in group if r['way'] == w])
        trl_accel = [w for w in dict.fromkeys(r['way'] for r in group) if WAYS[w][0] == 'trl' and w != 'trl']
        best = max(trl_accel, key=tps, default=None)  # TRL's best: its fastest accelerated way, by median tokens/s
        def ratio(w, ref):
            return med([x[w] / x[ref] for x in rep.values() if ref and w in x and ref in x]) if ref else None
        for w in dict.fromkeys(r['way'] for r in runs if (r['size'], r['seq'], r['batch']) == key):
            rs = [r for r in group if r['way'] == w]
            out.append(dict(size=key[0], seq=key[1], vocab_size=rs[0]['vocab_size'] if rs else None, batch=key[2], way=w, runs=len(rs),
                            batch_size=rs[0]['batch_size'] if rs else None, tokens_per_s=tps(w),
                            peak_gib=med([r['peak_gib'] for r in rs]), smi_peak_gib=med([r.get('smi_peak_gib') for r in rs]),
                            ratio_vs_trl=ratio(w, 'trl' if any('trl' in x for x in rep.values()) else None),
                            ratio_vs_trl_best=ratio(w, best), trl_best=best,
                            gradient_checkpointing=rs[0]['gradient_checkpointing'] if rs else None))
    return out

def child(cmd:list, timeout:float) -> tuple[dict|None, str]:
    "Run a child; its RESULT line as a dict (or None) and the tail of its output."
    try: p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e: return None, f'timed out after {timeout:.0f} s: ' + str(e.stderr or '')[-2000:]
    line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
    return (json.loads(line[-1][7:]) if line else None), (p.stderr or p.stdout)[-3000:]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='0.5b,1.5b,3b'); ap.add_argument('--seqs', default='1024,4096')
    ap.add_argument('--batches', default='mixed,equal'); ap.add_argument('--ways', default=None, help=f'default: {DEFAULT_WAYS}')
    ap.add_argument('--reps', type=int, default=3); ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=5, help='steps left out of the median')
    ap.add_argument('--tokens-per-step', type=int, default=8192, help='samples per step = this // seq')
    ap.add_argument('--gc', choices=('off', 'on', 'default'), default='off', help='gradient checkpointing for every way')
    ap.add_argument('--order', choices=('rotate', 'fixed'), default='rotate')
    ap.add_argument('--out', default=os.path.join(os.environ.get('OUT', 'bench/results'), 'sft.json'))
    ap.add_argument('--budget', type=float, default=540, help='seconds: start no new run after this')
    ap.add_argument('--run-timeout', type=float, default=240)
    ap.add_argument('--smoke', action='store_true', help='CPU: tiny config, vocabulary 512, 2 steps, 1 rep, ways without Liger')
    ap.add_argument('--one', help=argparse.SUPPRESS); ap.add_argument('--build', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.smoke:
        a.sizes, a.steps, a.warmup = 'tiny', min(a.steps, 2), min(a.warmup, 1)
        if a.reps == 3: a.reps = 1
        if a.seqs == '1024,4096': a.seqs = '128'
        if a.tokens_per_step == 8192: a.tokens_per_step = 512
        a.ways = a.ways or SMOKE_WAYS
    a.ways = a.ways or DEFAULT_WAYS
    if bad := [w for w in a.ways.split(',') if w not in WAYS]: ap.error(f'unknown ways {bad}: choose from {", ".join(WAYS)}')
    if a.build: print('RESULT ' + json.dumps({'path': str(build(a.build))}), flush=True); return
    if a.one:
        size, seq, batch, way = a.one.split(':')
        r = run_way(size, int(seq), batch, way, a.steps, a.warmup, a.tokens_per_step, a.gc, a.smoke)
        print('RESULT ' + json.dumps({**r, 'vocab_size': SMOKE_VOCAB if a.smoke else VOCAB}), flush=True); return
    t_start, out, ways = time.time(), Path(a.out), a.ways.split(',')
    results = dict(meta=meta(a), runs=[], not_made=[], summary=[])
    base = [sys.executable, os.path.abspath(__file__), '--steps', str(a.steps), '--warmup', str(a.warmup),
            '--tokens-per-step', str(a.tokens_per_step), '--gc', a.gc] + (['--smoke'] if a.smoke else [])
    def save():
        results['summary'] = summarize(results['runs'])
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(results, indent=1))
    for size in a.sizes.split(','):
        t0 = time.time(); r, tail = child(base + ['--build', size, '--ways', ways[0]], 600)  # in a child: no CUDA context in this process
        if r is None: print(f'model {size} could not be built:', tail[-1500:], flush=True)
        else: print(f'[{time.time() - t_start:5.0f}s] model {size} at {r["path"]}, {time.time() - t0:.0f}s', flush=True)
        for seq in map(int, a.seqs.split(',')):
            for batch in a.batches.split(','):
                for rep in range(a.reps):
                    order = ways[rep % len(ways):] + ways[:rep % len(ways)] if a.order == 'rotate' else ways
                    for i, way in enumerate(order):
                        if time.time() - t_start > a.budget:
                            results['not_made'].append(dict(size=size, seq=seq, batch=batch, way=way, rep=rep, why=f'over the budget of {a.budget:.0f} s')); continue
                        t0, smi = time.time(), SmiPeak()
                        r, tail = child(base + ['--one', f'{size}:{seq}:{batch}:{way}', '--ways', way], a.run_timeout)
                        r = r or dict(size=size, seq=seq, batch=batch, way=way, error=tail)
                        r.update(rep=rep, order=i, wall_s=round(time.time() - t0, 1), **smi.stop())
                        results['runs'].append(r); save()
                        show = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k not in ('step_times', 'tokens', 'trained_tokens', 'error')}
                        print(f'[{time.time() - t_start:5.0f}s]', json.dumps(show), r.get('error', '')[-1500:], flush=True)
    save()
    for s in results['summary']: print('SUMMARY', json.dumps(s))
    if results['not_made']: print(f"NOT MADE: {len(results['not_made'])} runs over the budget")
    return results

if __name__ == '__main__':
    main()
