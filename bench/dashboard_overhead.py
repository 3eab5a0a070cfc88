"""Dashboard overhead: the time `Dashboard.update` takes over a realistic event stream, at the CPU demo's step rate.

What it does:
1. Measures the demo's step time: `train_runtime / steps` of short runs of the demo's config (`ftnb.demo.demo_config`:
   the tiny model, full fine-tuning on toy addition, batch 64, on this CPU), the fastest of 3 (or takes `--step-time`).
   The fastest step gives the largest overhead share.
2. Starts a real IPython kernel (jupyter_client), so that widget comm messages and display-handle updates are
   serialised and sent as in a notebook; this client drains iopub, as a frontend would.
3. In the kernel, pre-builds `--steps` steps of events and feeds them to a displayed `Dashboard`, one `update` per
   step, on a simulated clock that advances one step time per step (so the 2-per-second throttle sees the demo's
   real step rate). Streams: `sft` (TRL SFT's metrics every step) and `grpo` (TRL GRPO's metrics, 16 rollouts and a
   5-phase timeline every step). Modes: `widget` (FigureWidget) and `handle` (display handles).
4. Overhead = the kernel process's CPU time over the stream (the dashboard's own thread and the iopub thread that
   sends its messages: the CPU taken from training), divided by `steps x step_time`. Also reported: the same without
   the first redraw (it builds the figures once, like loading the model), and the wall time spent inside `update`
   (which also counts waiting for a CPU on a busy machine).

Simplifications, both on the safe side: every step logs metrics (the demo logs every 25 steps), and the GRPO stream
is timed at the SFT demo's step rate, while a real GRPO step (generation + training) is slower.

Usage: python bench/dashboard_overhead.py [--steps 1500] [--step-time SECONDS] [--demo-steps 30]
Writes bench/results/dashboard_overhead.json and prints one row for bench/README.md.
"""
import argparse, json, os, platform, sys, tempfile, time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
HERE = Path(__file__).parent

KERNEL_CODE = r'''
import json, random, time
from ftnb.dashboard import Dashboard
from ftnb.events import Metrics, Rollouts, Timeline, RunStart

def sft_step(i, t):
    v = {'loss': 2.5/(1+i/50), 'grad_norm': 1.0, 'learning_rate': 5e-4*(1-i/STEPS), 'entropy': 1.5, 'num_tokens': 512.0*i,
         'mean_token_accuracy': min(1, i/STEPS)}
    ev = [Metrics(step=i, time=t, epoch=i/STEPS, values=v)]
    if i % 50 == 0: ev.append(Metrics(step=i, time=t, epoch=i/STEPS, values={'eval_loss': 2.0/(1+i/60), 'eval_runtime': 0.5}))
    return ev

def grpo_step(i, t):
    rng = random.Random(i)
    rows = [{'prompt': f'What is {rng.randint(10, 99)}+{rng.randint(10, 99)}? Think, then answer.', 'completion': '<think>' + 'x'*180 + '</think> 42',
             'reward': rng.random(), 'rewards/numeric_answer': float(rng.random() < .5), 'rewards/think_format': 1.0,
             'advantage': rng.gauss(0, 1), 'length': rng.randint(20, 64)} for _ in range(16)]
    v = {'loss': 0.01, 'grad_norm': 0.4, 'learning_rate': 5e-6, 'num_tokens': 1344.0*i, 'reward': rng.random(), 'reward_std': 0.3,
         'rewards/numeric_answer/mean': 0.5, 'rewards/numeric_answer/std': 0.5, 'rewards/think_format/mean': 1.0, 'rewards/think_format/std': 0.0,
         'frac_reward_zero_std': 0.5, 'kl': 0.001*i, 'entropy': 1.2, 'clip_ratio/low_mean': 0.0, 'clip_ratio/high_mean': 0.01,
         'clip_ratio/region_mean': 0.01, 'completions/mean_length': 40.0, 'completions/min_length': 20.0, 'completions/max_length': 64.0,
         'completions/clipped_ratio': 0.1, 'step_time': STEP_TIME}
    names = [('wake', .05), ('sync', .1), ('generate', .4), ('sleep', .05), ('train', .4)]
    ph, s = [], t - STEP_TIME
    for n, f in names: ph.append({'name': n, 'start': s, 'end': s + f*STEP_TIME, 'mem_gib': 5 + 20*(n in ('wake', 'sync', 'generate'))}); s += f*STEP_TIME
    return [Timeline(step=i, time=t, phases=ph), Rollouts(step=i, time=t, rows=rows), Metrics(step=i, time=t, values=v)]

def bench(kind, mode):
    make = {'sft': sft_step, 'grpo': grpo_step}[kind]
    steps = [make(i, 1000.0 + i*STEP_TIME) for i in range(1, STEPS+1)]  # built before timing
    clock = [0.0]
    steps[0].insert(0, RunStart(max_steps=STEPS, config={'method': {'name': kind, 'max_completion_length': 64}}))  # as EventCallback sends it
    dash = Dashboard(mode=mode, clock=lambda: clock[0])
    dash.display()
    cpu0, walls, cpus, draws = time.process_time(), [], [], []
    for evs in steps:
        c, t = time.process_time(), time.perf_counter(); drew = dash.update(evs)
        walls.append(time.perf_counter() - t); cpus.append(time.process_time() - c); draws.append(drew)
        clock[0] += STEP_TIME
    t = time.perf_counter(); dash.flush(); walls.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0  # all threads: also the kernel's iopub thread sending the messages
    first = draws.index(True)         # the first redraw builds the figures: a one-off, like loading the model
    run, one_off = STEPS*STEP_TIME, cpus[first]
    return {'stream': kind, 'mode': mode, 'steps': STEPS, 'draws': dash.draws, 'views': len(dash.figs),
            'first_draw_ms': round(1000*walls[first], 1), 'update_wall_s': round(sum(walls), 4), 'process_cpu_s': round(cpu, 4),
            'simulated_run_s': round(run, 2), 'overhead_pct': round(100*cpu/run, 3),
            'steady_overhead_pct': round(100*(cpu - one_off)/run, 3), 'wall_overhead_pct': round(100*sum(walls)/run, 3),
            'ms_per_draw': round(1000*(sum(walls) - walls[first])/max(dash.draws - 1, 1), 2)}

out = [bench(k, m) for k in ('sft', 'grpo') for m in ('widget', 'handle')]
print('RESULT ' + json.dumps(out))
'''

def demo_step_time(steps:int, repeats:int=3) -> dict:
    "Seconds per optimizer step of the CPU demo (a short run of its config)."
    from ftnb.sft import train
    with tempfile.TemporaryDirectory() as td:
        try:
            from ftnb.demo import demo_config
            cfg, src = demo_config(td, 'bench', max_steps=steps), 'ftnb.demo.demo_config'
        except ImportError:  # ftnb.demo not built: the same config, from the same settings
            from ftnb.config import RunConfig
            from ftnb.testing import DEMO_HPARAMS as hp
            cfg = RunConfig.model_validate({
                'model': {'name_or_path': 'tiny-qwen2', 'dtype': 'float32'},
                'data': {'path': 'toy:addition', 'eval_path': 'toy:addition_test', 'max_length': 32}, 'adapter': hp['adapter'],
                'train': {**hp['train'], 'output_dir': td, 'run_name': 'bench', 'max_steps': steps}})
            src = 'the demo config (ftnb.testing.DEMO_HPARAMS)'
        times = []
        for i in range(repeats):  # the fastest of a few short runs: other work on the machine only slows a run down
            cfg.train.run_name = f'bench{i}'; res = train(cfg); times.append(res.metrics['train_runtime']/res.step)
    return {'step_time_s': min(times), 'all_s': [round(t, 4) for t in times], 'source': f'{src}, fastest of {repeats} runs of {res.step} steps'}

def in_kernel(code:str, timeout:int=900) -> list[dict]:
    "Run `code` in a fresh IPython kernel; drain iopub like a frontend; return the RESULT line's JSON."
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name='python3', cwd=str(HERE.parent))
    out, n = [], [0]
    def hook(msg):
        n[0] += 1
        if msg['msg_type'] == 'stream': out.append(msg['content']['text'])
        if msg['msg_type'] == 'error': out.append('\n'.join(msg['content']['traceback']))
    try: kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    finally: kc.stop_channels(); km.shutdown_kernel(now=True)
    text = ''.join(out)
    line = [l for l in text.splitlines() if l.startswith('RESULT ')]
    if not line: raise RuntimeError(f'benchmark failed in the kernel:\n{text[-3000:]}')
    print(f'(the client received {n[0]} iopub messages)')
    return json.loads(line[-1][7:])

def machine() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    return {'platform': platform.platform(), 'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version()}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=1500, help="steps to stream (default: about the demo's length, 48 epochs x 32)")
    ap.add_argument('--step-time', type=float, default=None, help='seconds per step; default: measure the demo')
    ap.add_argument('--demo-steps', type=int, default=30)
    a = ap.parse_args()
    st = {'step_time_s': a.step_time, 'source': '--step-time'} if a.step_time else demo_step_time(a.demo_steps)
    print(f"demo step time: {st['step_time_s']:.4f} s ({st['source']})")
    rows = in_kernel(f"STEPS, STEP_TIME = {a.steps}, {st['step_time_s']!r}\n" + KERNEL_CODE)
    vers = {p: version(p) for p in ('ftnb', 'plotly', 'ipywidgets', 'anywidget', 'ipykernel', 'torch', 'transformers', 'trl')}
    res = {'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'machine': machine(), 'versions': vers,
           'demo_step': st, 'max_fps': 2, 'load_avg_1min': os.getloadavg()[0], 'results': rows,
           'max_overhead_pct': max(r['overhead_pct'] for r in rows), 'max_steady_overhead_pct': max(r['steady_overhead_pct'] for r in rows)}
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'dashboard_overhead.json').write_text(json.dumps(res, indent=2) + '\n')
    for r in rows:
        print(f"{r['stream']:5} {r['mode']:7} draws={r['draws']:4} first draw {r['first_draw_ms']:.0f} ms, then {r['ms_per_draw']:.1f} ms/draw; "
              f"cpu {r['process_cpu_s']:.2f}s of {r['simulated_run_s']:.0f}s: {r['overhead_pct']:.2f}% "
              f"(steady {r['steady_overhead_pct']:.2f}%; wall {r['wall_overhead_pct']:.2f}%)")
    print(f"README row: | {res['date'][:10]} | `dashboard_overhead.py`: Dashboard.update over {a.steps} steps at the demo's "
          f"{st['step_time_s']*1000:.0f} ms/step, max_fps=2, in a kernel | worst of sft/grpo x widget/handle: "
          f"{res['max_overhead_pct']:.2f}% of step time ({res['max_steady_overhead_pct']:.2f}% after the first draw) "
          f"| {res['machine']['cores']}-core {res['machine']['cpu']} | results/dashboard_overhead.json |")
    return res

if __name__ == '__main__': main()
