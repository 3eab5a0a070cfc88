"""GRPO step time and GPU memory: ftnb against TRL colocate+sleep and TRL without vLLM, in one process per way.

Run on the GPU machine (shared/gpu/README.md), from the repository root:
    PYTHONPATH=/tmp/site python bench/grpo.py --sizes 0.5b,1.5b --ways trl_colocate,ftnb,ftnb_adapter,trl_hf --out $OUT/grpo.json
Each (size, way) runs in its own subprocess, so one way's leftovers cannot count against the next.

Ways: trl_colocate = GRPOTrainer(use_vllm=True, vllm_mode='colocate', vllm_enable_sleep_mode=True); trl_hf = the same
without vLLM; ftnb = ftnb.grpo.train with its defaults (sync 'auto', which merges a plain LoRA into copies, sleep level
2, gradient checkpointing 'auto' = on for GRPO on a GPU); ftnb_adapter / ftnb_merge = ftnb with method.sync forced, to
choose 'auto' by measurement; ftnb_gc / ftnb_nogc = ftnb with gradient checkpointing forced on / off. Each way runs at
its library's defaults otherwise. Each result records its sync, sleep level and gradient checkpointing: the 'ftnb' rows
of the files up to grpo_*_final.json ran when ftnb's default was checkpointing off, and say so.

Setup, the same for every way: a Qwen2-shaped model with random bf16 weights built here (vocabulary = the tiny local
tokenizer's, so every sampled id decodes), LoRA r16 alpha 32 on all linear layers, 4 prompts x 8 generations = 32
completions of up to 256 tokens per step (random weights rarely sample eos, so nearly all run to 256), lr 1e-5,
beta 0, reward = ftnb.rewards length_penalty (cheap; the reward is not what is measured).

Reported per way: median seconds per step over steps 3..N (steps 1-2 are warm-up), peak GPU memory in use while
training (device-wide, sampled every 20 ms from cudaMemGetInfo, so the vLLM pool counts), memory in use between steps
(at each step end, after the engine slept), and the time split from TRL's own profiling contexts: generate, sync,
logprob (old-policy log-probs), loss+backward, optimizer.
"""
import argparse, json, os, statistics, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {  # Qwen2 shapes; vocab is the tokenizer's (512), so params come from the blocks
    '0.5b': dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=2),
    '1.5b': dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2),
}

def build(size:str) -> Path:
    "Save a random-weight Qwen2 model of `size` with the tiny tokenizer under /tmp/ftnb-bench."
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from ftnb.testing import tiny_tokenizer
    path = Path(f'/tmp/ftnb-bench/{size}')
    if (path/'config.json').exists(): return path
    tok = tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1e6,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SIZES[size])
    torch.manual_seed(0)
    with torch.device('cuda'): m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.save_pretrained(path); tok.save_pretrained(path)
    return path

def prompts_file() -> Path:
    p = Path('/tmp/ftnb-bench/prompts.jsonl'); p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(''.join(json.dumps({'prompt': f'{a}+{b}=', 'completion': str(a + b)}) + '\n' for a in range(10, 30) for b in range(10, 14)))
    return p

class Probe:
    "GPU memory sampler (device-wide) and TRL profiling timings, per optimizer step."
    def __init__(self):
        import torch
        from transformers import TrainerCallback
        self.torch, self.peak, self.stop, self.t = torch, 0.0, False, []
        self.between, self.prof, self.opt = [], [], []
        threading.Thread(target=self._sample, daemon=True).start()
        from trl.extras import profiling
        orig = profiling.ProfilingContext._log_metrics
        probe = self
        def log(ctx, duration):
            probe.prof.append((len(probe.t), ctx.name.split('.', 1)[-1], duration)); return orig(ctx, duration)  # drop the trainer class
        profiling.ProfilingContext._log_metrics = log
        class CB(TrainerCallback):
            def on_step_begin(s, args, state, control, **kw): probe.t0 = time.perf_counter()
            def on_pre_optimizer_step(s, args, state, control, **kw): probe.o0 = time.perf_counter()
            def on_optimizer_step(s, args, state, control, **kw): probe.opt.append(time.perf_counter() - probe.o0)
            def on_step_end(s, args, state, control, **kw):
                probe.t.append(time.perf_counter() - probe.t0); probe.between.append(probe.used())
        self.callback = CB()
    def used(self) -> float:
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
        logp_all = per_step({'_get_per_token_logps_and_entropies'}); loss = per_step({'compute_loss'})
        step = statistics.median(self.t[warm:]); opt = statistics.median(self.opt[warm:])
        return dict(steps=len(self.t), sec_per_step=step, step_times=self.t, peak_gib=self.peak,
                    between_steps_gib=statistics.median(self.between[warm:]),
                    split=dict(generate=gen, sync=sync, logprob_and_forward=logp_all, loss=loss, optimizer=opt,
                               backward_and_other=step - (gen or 0) - (sync or 0) - (loss or 0) - opt))

def grpo_args(way:str, steps:int, out:str):
    from trl import GRPOConfig
    kw = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=32, num_generations=8, max_completion_length=256,
              learning_rate=1e-5, beta=0.0, logging_steps=1, report_to='none', bf16=True, save_strategy='no', seed=0)
    if way == 'trl_colocate':
        kw.update(use_vllm=True, vllm_mode='colocate', vllm_enable_sleep_mode=True, vllm_gpu_memory_utilization=0.3, vllm_max_model_length=512)
    return GRPOConfig(**kw)

def run_way(size:str, way:str, steps:int) -> dict:
    "One (size, way) in this process."
    import torch
    path, data = build(size), prompts_file()
    probe = Probe()
    from ftnb.rewards import get
    reward = get('length_penalty', max_len=300)
    if way.startswith('ftnb'):
        from ftnb.config import RunConfig
        from ftnb.grpo import train
        cfg = RunConfig.model_validate({'model': {'name_or_path': str(path), 'dtype': 'bfloat16'},
            'data': {'path': str(data), 'eval_fraction': 0, 'max_length': 64},
            'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
            'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 300}], 'num_generations': 8,
                       'max_completion_length': 256, 'beta': 0.0, 'engine': 'vllm', 'gpu_memory_utilization': 0.3, 'max_model_len': 512,
                       **({'sync': way.split('_')[1]} if way in ('ftnb_adapter', 'ftnb_merge') else {})},
            'accel': {'gradient_checkpointing': {'ftnb_gc': True, 'ftnb_nogc': False}.get(way, 'auto')},
            'train': {'output_dir': '/tmp/ftnb-bench/runs', 'run_name': f'ftnb-{size}-{os.getpid()}', 'max_steps': steps, 'batch_size': 32,
                      'lr': 1e-5, 'logging_steps': 1, 'save_steps': 100_000, 'seed': 0}})
        res = train(cfg, callbacks=[probe.callback])
        m = cfg.method
        settings = dict(sync=m.sync, sleep_level=m.sleep_level, gradient_checkpointing=res.trainer.args.gradient_checkpointing)
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOTrainer
        tok = AutoTokenizer.from_pretrained(path); tok.padding_side = 'left'
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        ds = Dataset.from_list([json.loads(l) for l in data.read_text().splitlines()]).rename_column('completion', 'answer')
        tr = GRPOTrainer(model=model, reward_funcs=[reward], args=grpo_args(way, steps, f'/tmp/ftnb-bench/runs/{way}-{size}'),
                         train_dataset=ds, processing_class=tok, callbacks=[probe.callback],
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
        tr.train()
        settings = dict(sleep_level=2 if tr.args.vllm_enable_sleep_mode and tr.args.use_vllm else 0,
                        gradient_checkpointing=tr.args.gradient_checkpointing)
    probe.stop = True
    params = sum(p.numel() for p in AutoConfigParams(path))
    return dict(size=size, way=way, params_m=params / 1e6, **settings, **probe.summary())

def AutoConfigParams(path):
    "Parameter tensors of the saved model, counted on the meta device (no memory)."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    with torch.device('meta'): return list(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).parameters())

def meta() -> dict:
    import torch, transformers, peft, trl
    try: import vllm; vv = vllm.__version__
    except ImportError: vv = None
    return dict(date=time.strftime('%Y-%m-%d %H:%M'), gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                transformers=transformers.__version__, peft=peft.__version__, trl=trl.__version__, vllm=vv)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', default='0.5b,1.5b'); ap.add_argument('--ways', default='trl_hf,trl_colocate,ftnb')
    ap.add_argument('--steps', type=int, default=7); ap.add_argument('--out', default='bench/results/grpo.json')
    ap.add_argument('--one', help='size:way, run in this process (internal)')
    a = ap.parse_args()
    if a.one:
        size, way = a.one.split(':')
        print('RESULT ' + json.dumps(run_way(size, way, a.steps)), flush=True); sys.exit(0)
    results = {'meta': None, 'runs': []}
    for size in a.sizes.split(','):
        for way in a.ways.split(','):
            t0 = time.time()
            p = subprocess.run([sys.executable, __file__, '--one', f'{size}:{way}', '--steps', str(a.steps)], capture_output=True, text=True)
            line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
            r = json.loads(line[-1][7:]) if line else dict(size=size, way=way, error=(p.stderr or p.stdout)[-3000:])
            r['wall_s'] = time.time() - t0; results['runs'].append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ('step_times', 'error')}), r.get('error', '')[-1500:], flush=True)
            results['meta'] = results['meta'] or meta()
            Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(results, indent=1))
