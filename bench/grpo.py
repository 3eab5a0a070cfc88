"""GRPO step time and device-wide GPU memory at real model shapes: ftnb against TRL colocate+sleep, ways interleaved.

Run on the GPU machine (shared/gpu/README.md), from the repository root:
    PYTHONPATH=/tmp/site:$PWD python bench/grpo.py --sizes 0.5b --pairs 3 --out $OUT/grpo.json
A CPU dry run of the whole path (tiny shape, HF generation, 2 steps), to catch mistakes before spending GPU time:
    python bench/grpo.py --sizes tiny --pairs 1 --cpu --out /tmp/grpo-dry.json

Setup, the same for both ways:
- the exact Qwen2.5-0.5B / 1.5B / 3B configs (`SIZES`), random bf16 weights, vocabulary 151,936, tied embeddings;
- a local byte-level BPE tokenizer with exactly 151,936 entries (256 byte symbols, filler entries, Qwen's special
  tokens at Qwen's ids), no merges, so that every id the model can sample decodes and each prompt byte is one token;
- 64 prompts of exactly 128 tokens, 4 prompts x 8 generations = 32 completions of 256 tokens per step (random weights
  almost never sample the end token, so completions run to 256), LoRA r16 alpha 32 on all linear layers, lr 1e-5,
  beta 0, `gpu_memory_utilization=0.3`, `max_model_len=512`; reward = ftnb's length_penalty (cheap: not what is measured).
- Ways: `trl` = GRPOTrainer(use_vllm=True, vllm_mode='colocate', vllm_enable_sleep_mode=True) at TRL's defaults
  (gradient checkpointing on, sleep level 2, merge-and-push sync); `ftnb` = ftnb.grpo.train at ftnb's defaults;
  with `--shared` also `ftnb_shared` = ftnb with method.sync='shared' (one copy of the base weights, used by the trainer
  and vLLM; the adapter handed over from memory; sleep frees only the KV cache), the three in rotated order per rep.
- Each run is its own process. The ways are interleaved with the order flipped in every other pair (ftnb trl, trl ftnb,
  ftnb trl, ...), since the way run second in a call was up to 40% slower on the H200; the ratio is taken per pair.

Reported per run: median seconds per step over steps 3..N (1-2 are warm-up), the device-wide peak GPU memory from
`nvidia-smi` sampled every 50 ms by this (parent) process over the child's whole life (all processes on the GPU: vLLM's
pool, the trainer, the CUDA context), the same from cudaMemGetInfo inside the child while training, memory in use at each
step end, and the time split from TRL's profiling contexts. The top-level `summary` has one entry per size with medians
over the pairs.

Memory-fit mode (`--fit ftnb,trl,ftnb_shared` or `--fit ftnb_qlora`, one run per way, 5 steps): vLLM's KV cache is cut
to what one step needs (`kv_bytes`: 32 sequences x `max_model_len` tokens, x1.25 for block rounding), for every way
alike, by passing vLLM's own `kv_cache_memory_bytes` to each `vllm.LLM` the child builds (TRL has no setting for it, so
the bench wraps `LLM.__init__` in the child). The device-wide peak of such a run is the way's `*_min_gib`: the smallest
GPU it fits, give or take the allocator's slack. An H200 cannot be capped to a smaller size, so this is the peak with
the one pool that scales with the GPU (vLLM's KV cache) cut to its need, not a run on a smaller card. `ftnb_qlora` = ftnb
with `adapter.method='qlora'` (vLLM reads the same bf16 checkpoint and quantizes it to 4 bits itself); `trl_qlora` = TRL
with a 4-bit model from transformers (bitsandbytes NF4) and its colocated vLLM at TRL's settings (not yet run: whether
TRL's merge-and-push sync works over a 4-bit base is what the run will show).
A ftnb run's `timeline.jsonl` (phases with the memory in use at each) is copied next to the JSON.
"""
import argparse, json, os, random, statistics, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VOCAB = 151_936  # Qwen2.5's embedding rows (config.vocab_size); its tokenizer has 151,665 entries, the rest is padding
QWEN = dict(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
            hidden_act='silu', use_sliding_window=False, bos_token_id=151643, eos_token_id=151643)
SIZES = {  # the exact Qwen2.5 configs (config.json of Qwen/Qwen2.5-{0.5B,1.5B,3B}), vocabulary included
    '0.5b': dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
    '1.5b': dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2),
    '3b': dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2),
    'tiny': dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),  # CPU dry run
}
SPECIAL = {151643: '<|endoftext|>', 151644: '<|im_start|>', 151645: '<|im_end|>'}
PROMPT_TOKENS, COMPLETION_TOKENS, N_GEN, BATCH = 128, 256, 8, 32
WAYS = ('ftnb', 'trl', 'ftnb_shared')  # with --shared: each rep starts one way later (A B C, B C A, C A B)
WORK = Path(os.environ.get('FTNB_BENCH_DIR', '/tmp/ftnb-bench'))
FIT_STEPS, MAX_MODEL_LEN = 5, 512

def kv_bytes(size:str) -> int:
    "vLLM KV-cache bytes for one step: 32 sequences x max_model_len tokens (bf16 K and V of every layer), x1.25 for block rounding."
    c = SIZES[size]
    per_token = c['num_hidden_layers'] * 2 * c['num_key_value_heads'] * (c['hidden_size'] // c['num_attention_heads']) * 2
    return int(1.25 * BATCH * MAX_MODEL_LEN * per_token)

def cap_kv(n:int):
    "Make every vllm.LLM built in this process use a KV cache of n bytes (vLLM's kv_cache_memory_bytes; it then ignores gpu_memory_utilization for the cache)."
    import vllm
    init = vllm.LLM.__init__
    def capped(self, *a, **kw): kw['kv_cache_memory_bytes'] = n; init(self, *a, **kw)
    vllm.LLM.__init__ = capped

def tokenizer(n:int=VOCAB):
    "A byte-level BPE tokenizer with exactly `n` entries and no merges: every id decodes, each input byte is one token."
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 printable stand-ins for the bytes
    vocab = {c: i for i, c in enumerate(alphabet)}
    first_special = min(SPECIAL)
    for a in alphabet:  # filler entries: pairs, then triples, of byte symbols (they decode to those bytes)
        for b in alphabet:
            if len(vocab) == first_special: break
            vocab[a + b] = len(vocab)
    k = 0
    while len(vocab) < first_special:
        vocab[alphabet[k % 256] + alphabet[(k // 256) % 256] + alphabet[k // 65536]] = len(vocab); k += 1
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    specials = [SPECIAL.get(i, f'<|extra_{i - first_special}|>') for i in range(first_special, n)]
    tk.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='<|endoftext|>', pad_token='<|endoftext|>')
    assert len(tok) == n and tok.eos_token_id == first_special, (len(tok), tok.eos_token_id)
    return tok

def build(size:str) -> Path:
    "Save a random-weight model of the exact Qwen2.5 `size` config, with the local tokenizer, under WORK/size."
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    path = WORK/size
    if (path/'config.json').exists(): return path
    tok = tokenizer()
    cfg = Qwen2Config(**QWEN, **SIZES[size], pad_token_id=151643)
    torch.manual_seed(0)
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    with torch.device(dev): m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.save_pretrained(path); tok.save_pretrained(path)
    return path

def prompts_file(n:int=64) -> Path:
    "n prompts of exactly PROMPT_TOKENS bytes (= tokens, with no merges), with a dummy answer."
    p = WORK/'prompts.jsonl'; p.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0); letters = 'abcdefghijklmnopqrstuvwxyz0123456789 '
    p.write_text(''.join(json.dumps({'prompt': ''.join(rng.choice(letters) for _ in range(PROMPT_TOKENS)), 'completion': 'x'}) + '\n'
                         for _ in range(n)))
    return p

class Probe:
    "In the child: GPU memory in use (cudaMemGetInfo, device-wide) sampled every 20 ms, and per-step times and TRL's profiling split."
    def __init__(self):
        import torch
        from transformers import TrainerCallback
        self.torch, self.peak, self.stop, self.t = torch, 0.0, False, []
        self.between, self.prof, self.opt = [], [], []
        if torch.cuda.is_available(): threading.Thread(target=self._sample, daemon=True).start()
        from trl.extras import profiling
        orig, probe = profiling.ProfilingContext._log_metrics, self
        def log(ctx, duration):
            probe.prof.append((len(probe.t), ctx.name.split('.', 1)[-1], duration)); return orig(ctx, duration)
        profiling.ProfilingContext._log_metrics = log
        class CB(TrainerCallback):
            def on_step_begin(s, args, state, control, **kw): probe.t0 = time.perf_counter()
            def on_pre_optimizer_step(s, args, state, control, **kw): probe.o0 = time.perf_counter()
            def on_optimizer_step(s, args, state, control, **kw): probe.opt.append(time.perf_counter() - probe.o0)
            def on_step_end(s, args, state, control, **kw):
                probe.t.append(time.perf_counter() - probe.t0); probe.between.append(probe.used())
        self.callback = CB()
    def used(self) -> float|None:
        if not self.torch.cuda.is_available(): return None
        free, total = self.torch.cuda.mem_get_info(); return (total - free) / 2**30
    def _sample(self):
        while not self.stop:
            try: self.peak = max(self.peak, self.used())
            except Exception: pass
            time.sleep(0.02)
    def summary(self, warm:int=2) -> dict:
        steps = list(range(warm, len(self.t)))
        def per_step(names):
            tot = [sum(d for s, n, d in self.prof if s == i and n in names) for i in steps]
            return statistics.median(tot) if tot else None
        gen, sync = per_step({'vLLM.generate', 'transformers.generate', 'transformers.generate_batch'}), per_step({'sync_weights'})
        logp = per_step({'_get_per_token_logps_and_entropies'}); loss = per_step({'compute_loss'})
        step, opt = statistics.median(self.t[warm:]), statistics.median(self.opt[warm:])
        between = [b for b in self.between[warm:] if b is not None]
        return dict(steps=len(self.t), sec_per_step=step, step_times=self.t, child_peak_gib=self.peak or None,
                    between_steps_gib=statistics.median(between) if between else None,
                    split=dict(generate=gen, sync=sync, logprob_forwards=logp, loss=loss, optimizer=opt,
                               backward_and_other=step - (gen or 0) - (sync or 0) - (loss or 0) - opt))

def run_way(size:str, way:str, steps:int, cpu:bool=False, kv:int|None=None) -> dict:
    "One (size, way) run in this process; `kv`: cap vLLM's KV cache at this many bytes (memory-fit mode)."
    import torch
    if kv and not cpu: cap_kv(kv)
    path, data = build(size), prompts_file()
    comp, n_gen, batch = (8, 2, 4) if cpu else (COMPLETION_TOKENS, N_GEN, BATCH)
    probe = Probe()
    run_dir = None
    if way in ('ftnb', 'ftnb_shared', 'ftnb_qlora'):
        from ftnb.config import RunConfig
        from ftnb import train
        cfg = RunConfig.model_validate({'model': {'name_or_path': str(path), 'dtype': 'float32' if cpu else 'bfloat16'},
            'data': {'path': str(data), 'eval_fraction': 0, 'max_length': 512},
            'adapter': {'method': 'qlora' if way == 'ftnb_qlora' else 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
            'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 300}], 'num_generations': n_gen,
                       'max_completion_length': comp, 'beta': 0.0, 'engine': 'hf' if cpu else 'vllm',
                       'gpu_memory_utilization': 0.3, 'max_model_len': 512,
                       **({'sync': 'shared', 'sleep_level': 1} if way == 'ftnb_shared' else {})},
            'train': {'output_dir': str(WORK/'runs'), 'run_name': f'ftnb-{size}-{os.getpid()}', 'max_steps': steps, 'batch_size': batch,
                      'lr': 1e-5, 'logging_steps': 1, 'save_steps': 100_000, 'seed': 0}})
        res = train(cfg, callbacks=[probe.callback])
        m, a, run_dir = cfg.method, res.trainer.args, str(res.run_dir)
        settings = dict(sync=m.sync, sleep_level=m.sleep_level, gradient_checkpointing=a.gradient_checkpointing,
                        **{k: getattr(m, k) for k in ('old_logprobs',) if hasattr(m, k)})
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer
        from ftnb.rewards import get
        tok = AutoTokenizer.from_pretrained(path); tok.padding_side = 'left'
        quant = {}
        if way == 'trl_qlora':  # TRL's QLoRA as its docs show it: a 4-bit model from transformers; its vLLM engine loads the checkpoint itself
            from transformers import BitsAndBytesConfig
            quant = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,
                                                                bnb_4bit_compute_dtype=torch.bfloat16))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if cpu else torch.bfloat16, **quant)
        ds = Dataset.from_list([json.loads(l) for l in data.read_text().splitlines()]).rename_column('completion', 'answer')
        kw = dict(output_dir=str(WORK/'runs'/f'trl-{size}'), max_steps=steps, per_device_train_batch_size=batch, num_generations=n_gen,
                  max_completion_length=comp, learning_rate=1e-5, beta=0.0, logging_steps=1, report_to='none', bf16=not cpu,
                  save_strategy='no', seed=0, use_cpu=cpu)
        if not cpu: kw.update(use_vllm=True, vllm_mode='colocate', vllm_enable_sleep_mode=True, vllm_gpu_memory_utilization=0.3,
                              vllm_max_model_length=512)
        tr = GRPOTrainer(model=model, reward_funcs=[get('length_penalty', max_len=300)], args=GRPOConfig(**kw), train_dataset=ds,
                         processing_class=tok, callbacks=[probe.callback],
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
        tr.train()
        settings = dict(sleep_level=2 if tr.args.use_vllm and tr.args.vllm_enable_sleep_mode else 0,
                        gradient_checkpointing=tr.args.gradient_checkpointing)
    probe.stop = True
    return dict(size=size, way=way, params_m=params_m(path), **settings, **probe.summary(), kv_bytes=kv, run_dir=run_dir)

def params_m(path) -> float:
    "Parameters of the saved model in millions, counted on the meta device (no memory)."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    with torch.device('meta'): m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in m.parameters()) / 1e6

class SmiPeak:
    "In the parent: the device-wide GPU memory in use (nvidia-smi memory.used, every process) sampled every 50 ms while a child runs."
    def __init__(self):
        self.samples, self.proc = [], None
        try:
            self.proc = subprocess.Popen(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits', '-lms', '50'],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        except FileNotFoundError: pass
    def _read(self):
        for line in self.proc.stdout:
            try: self.samples.append(float(line.split(',')[0]) / 1024)  # MiB -> GiB
            except ValueError: pass
    def stop(self) -> dict:
        if self.proc: self.proc.terminate(); self.proc.wait()
        s = self.samples
        return dict(smi_peak_gib=max(s) if s else None, smi_first_gib=s[0] if s else None, smi_samples=len(s))

def meta() -> dict:
    import torch, transformers, peft, trl
    try: import vllm; vv = vllm.__version__
    except ImportError: vv = None
    smi = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                         capture_output=True, text=True).stdout.strip() if torch.cuda.is_available() else None
    return dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
                nvidia_smi=smi, torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__, trl=trl.__version__,
                vllm=vv, setup=dict(prompt_tokens=PROMPT_TOKENS, completions=BATCH, completion_tokens=COMPLETION_TOKENS, num_generations=N_GEN,
                                    vocab_size=VOCAB, lora_r=16, gpu_memory_utilization=0.3, max_model_len=512))

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def summarize(runs:list[dict]) -> list[dict]:
    "One entry per size: medians over the pairs (a pair = one ftnb run and one TRL run made next to each other)."
    out = []
    for size in dict.fromkeys(r['size'] for r in runs):
        pairs = {}
        for r in runs:
            if r['size'] == size and 'sec_per_step' in r and not r.get('fit'): pairs.setdefault(r['pair'], {})[r['way']] = r
        full = [p for p in pairs.values() if {'ftnb', 'trl'} <= p.keys()]
        get = lambda way, k: med([p[way][k] for p in full])
        out.append(dict(size=size, vocab_size=VOCAB, pairs=len(full),
                        ftnb_s_per_step=get('ftnb', 'sec_per_step'), trl_s_per_step=get('trl', 'sec_per_step'),
                        ratio=med([p['ftnb']['sec_per_step'] / p['trl']['sec_per_step'] for p in full]),
                        pair_ratios=[round(p['ftnb']['sec_per_step'] / p['trl']['sec_per_step'], 3) for p in full],
                        ftnb_peak_gib=get('ftnb', 'smi_peak_gib'), trl_peak_gib=get('trl', 'smi_peak_gib'),
                        ftnb_min_gib=None, trl_min_gib=None))
        fit = {r['way']: r['smi_peak_gib'] for r in runs if r['size'] == size and r.get('fit') and 'sec_per_step' in r}
        # the smallest GPU (memory-fit mode): ftnb's is its leaner way where both ran; each way's own value is kept beside it
        ftnb_fit = [fit[w] for w in ('ftnb', 'ftnb_shared', 'ftnb_qlora') if fit.get(w) is not None]
        out[-1].update({f'{w}_fit_gib': v for w, v in fit.items()})
        out[-1].update(ftnb_min_gib=min(ftnb_fit) if ftnb_fit else None, trl_min_gib=fit.get('trl'))
        sh = [p for p in pairs.values() if {'ftnb_shared', 'trl'} <= p.keys()]
        if sh:  # method.sync='shared' (one copy of the base weights, adapter from memory, KV-only sleep), against TRL in the same rep
            out[-1].update(shared_reps=len(sh), ftnb_shared_s_per_step=med([p['ftnb_shared']['sec_per_step'] for p in sh]),
                           shared_ratio=med([p['ftnb_shared']['sec_per_step'] / p['trl']['sec_per_step'] for p in sh]),
                           shared_rep_ratios=[round(p['ftnb_shared']['sec_per_step'] / p['trl']['sec_per_step'], 3) for p in sh],
                           ftnb_shared_peak_gib=med([p['ftnb_shared']['smi_peak_gib'] for p in sh]))
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', default='0.5b,1.5b'); ap.add_argument('--pairs', type=int, default=3)
    ap.add_argument('--steps', type=int, default=6); ap.add_argument('--out', default='bench/results/grpo.json')
    ap.add_argument('--budget', type=float, default=560, help='seconds: start no new pair after this')
    ap.add_argument('--run-timeout', type=float, default=240); ap.add_argument('--cpu', action='store_true')
    ap.add_argument('--one', help='size:way, run in this process (internal)')
    ap.add_argument('--first-rep', type=int, default=0, help='index of the first rep (to continue a series in another call)')
    ap.add_argument('--shared', action='store_true', help="also the way 'ftnb_shared' (method.sync='shared'); the order rotates each rep")
    ap.add_argument('--fit', help="memory-fit mode: these ways (ftnb, trl, ftnb_shared, ftnb_qlora), one run each, 5 steps, vLLM's KV cache cut to one step's need")
    ap.add_argument('--kv-bytes', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        size, way = a.one.split(':')
        print('RESULT ' + json.dumps(run_way(size, way, a.steps, a.cpu, a.kv_bytes)), flush=True); return
    t_start, out = time.time(), Path(a.out)
    results = dict(meta=meta(), runs=[], not_made=[])
    if a.fit: results['fit_note'] = __doc__[__doc__.index('Memory-fit mode'):__doc__.index('A ftnb run')].strip()
    for size in a.sizes.split(','):
        for i in range(a.first_rep, a.first_rep + (1 if a.fit else a.pairs)):
            order = (tuple(a.fit.split(',')) if a.fit else WAYS[i % len(WAYS):] + WAYS[:i % len(WAYS)] if a.shared
                     else (('ftnb', 'trl') if i % 2 == 0 else ('trl', 'ftnb')))
            if time.time() - t_start > a.budget:
                results['not_made'].append(dict(size=size, pair=i, why=f'over the call budget of {a.budget:.0f} s')); continue
            for way in order:
                t0, smi = time.time(), SmiPeak()
                cmd = [sys.executable, __file__, '--one', f'{size}:{way}', '--steps', str(FIT_STEPS if a.fit else a.steps)] + (
                    ['--cpu'] if a.cpu else []) + (['--kv-bytes', str(kv_bytes(size))] if a.fit else [])
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.run_timeout)
                    line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
                    r = json.loads(line[-1][7:]) if line else dict(size=size, way=way, error=(p.stderr or p.stdout)[-3000:])
                except subprocess.TimeoutExpired as e:
                    r = dict(size=size, way=way, error=f'timed out after {a.run_timeout} s: ' + str(e.stderr or '')[-2000:])
                r.update(pair=i, order=order.index(way), wall_s=time.time() - t0, fit=bool(a.fit), **smi.stop())
                tl = Path(r.get('run_dir') or '/nonexistent')/'timeline.jsonl'
                if tl.exists():  # the memory timeline of this run, for the engine notebook
                    dest = out.parent/f"timeline_{size}_{way}{'_fit' if a.fit else ''}.jsonl"; dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_text(tl.read_text()); r['timeline_file'] = dest.name
                results['runs'].append(r)
                print(json.dumps({k: v for k, v in r.items() if k not in ('step_times', 'error')}), r.get('error', '')[-1500:], flush=True)
                results['summary'] = summarize(results['runs'])
                out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(results, indent=1))
    for s in results.get('summary', []): print('SUMMARY', json.dumps(s))

if __name__ == '__main__':
    main()
