"""GRPO through a vLLM server on ONE GPU (method.engine='server'): `ftnb serve`'s server and the trainer on the same
card, each with its own memory share (the server method.gpu_memory_utilization=0.3, the trainer the rest), 10 GRPO steps
on bench/grpo.py's '0.5b' model (the exact Qwen2.5-0.5B config, random bf16 weights, the local tokenizer). The LoRA
adapter reaches the server through vLLM's runtime LoRA loading each step; the rollouts and timeline are logged as in
colocate mode. Prints the server's start-up time and each step's time, and writes them to $OUT/server_gpu.json when
$OUT is set.

Run on the GPU machine (vllm 0.26.0 and trl installed, PYTHONPATH=/tmp/site:<repo>):
    pytest tests/gpu/test_server_gpu.py -x -q -s
(not marked `gpu`: pyproject's addopts deselect that mark; it skips itself without CUDA. Without pytest-xdist there,
add `-o addopts=""`, as `-n 2` is in addopts; with xdist, `-s` output is lost: read $OUT/server_gpu.json.)"""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
torch = pytest.importorskip('torch')
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

STEPS, START_S = 10, 300  # the server's start-up bound: 30 s measured for vLLM 0.26 in-process on an H100 (DESIGN.md), plus compile

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_ten_grpo_steps_with_the_server_on_the_same_gpu(tmp_path):
    pytest.importorskip('vllm'); pytest.importorskip('trl')
    sys.path.insert(0, str(ROOT/'bench'))
    from grpo import build, prompts_file
    from ftnb import server as S
    from ftnb.config import RunConfig
    from ftnb.events import read_jsonl, read_rollouts
    from ftnb import train
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(build('0.5b')), 'dtype': 'bfloat16'},
        'data': {'path': str(prompts_file()), 'eval_fraction': 0, 'max_length': 64},
        'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
        'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 40}], 'num_generations': 8,
                   'max_completion_length': 64, 'engine': 'server', 'server_url': f'http://127.0.0.1:{free_port()}',
                   'server_gpu': 0, 'trainer_gpu': 0, 'gpu_memory_utilization': 0.3, 'max_model_len': 256, 'server_timeout': 60},
        'train': {'output_dir': str(tmp_path), 'run_name': 'server', 'max_steps': STEPS, 'batch_size': 16, 'lr': 1e-5,
                  'logging_steps': 1, 'save_steps': 100_000}})
    from ftnb.config import save
    log = tmp_path/'server.log'
    out = {'gpu': torch.cuda.get_device_name(0), 'steps': STEPS}
    # `ftnb serve CONFIG.yaml`, as a user starts it: the server on method.server_gpu, with the run's settings
    proc = subprocess.Popen([sys.executable, '-c', 'from ftnb.cli import main; main()', 'serve', str(save(cfg, tmp_path/'cfg.yaml')), '--log', str(log)],
                            env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])})
    try:
        t0 = time.time()
        S.wait_server(cfg.method.server_url, proc, START_S, log)
        out['server_start_s'] = round(time.time() - t0, 1)
        free, total = torch.cuda.mem_get_info()
        out['server_gib'] = round((total - free) / 2**30, 2)  # the server's share, before the trainer loads
        print(f"server up in {out['server_start_s']} s, {out['server_gib']} GiB in use on the GPU", flush=True)
        t0 = time.time()
        res = train(cfg)
        out['train_s'] = round(time.time() - t0, 1)
        assert (res.status, res.step) == ('finished', STEPS), res
        tl = read_jsonl(res.run_dir/'timeline.jsonl')
        out['step_s'] = [round(max(p['end'] for p in r['phases']) - min(p['start'] for p in r['phases']), 3) for r in tl]
        out['generate_s'] = [round(sum(p['end'] - p['start'] for p in r['phases'] if p['name'] == 'generate'), 3) for r in tl]
        out['sync_s'] = [round(sum(p['end'] - p['start'] for p in r['phases'] if p['name'] == 'sync'), 3) for r in tl]
        m = [r for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'reward' in r]
        out['logp_diff_max'] = [round(r.get('sampling/sampling_logp_difference/max', float('nan')), 4) for r in m]
        out['peak_gib'] = max((p.get('peak_gib') or 0) for r in tl for p in r['phases'])
        print('SERVER-GPU', json.dumps(out), flush=True)
        assert [r['step'] for r in tl] == list(range(1, STEPS + 1))
        assert all(('sync', 'adapter') in [(p['name'], p.get('detail')) for p in r['phases']] for r in tl)  # the adapter, every step
        assert all('generate' in [p['name'] for p in r['phases']] for r in tl)
        df = read_rollouts(res.run_dir)
        assert df.groupby('step').size().to_dict() == {s: 16 for s in range(1, STEPS + 1)}  # every completion of every step
        assert len(list((res.run_dir/'rollouts').glob('*.parquet'))) == STEPS and df.length.between(1, 64).all()
        assert all(d == d and d < 1.0 for d in out['logp_diff_max']), out['logp_diff_max']  # the server's log-probs are the trainer's (bf16)
    except BaseException:
        print("the server's log ends:\n" + S.log_tail(log, 120), flush=True)
        raise
    finally:
        if proc.poll() is None:  # SIGTERM: ftnb serve stops the server and its engine process on its way out
            proc.send_signal(signal.SIGTERM)
            try: proc.wait(90)
            except subprocess.TimeoutExpired: proc.kill()
        if S._health(cfg.method.server_url):  # last resort: the server's own process group, by the pid vLLM logs
            import re
            for pid in set(re.findall(r'APIServer pid=(\d+)', S.log_tail(log, 10_000))):
                try: os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError): pass
        if os.environ.get('OUT'): Path(os.environ['OUT'], 'server_gpu.json').write_text(json.dumps(out, indent=1))
    assert proc.returncode == 0 and not S._health(cfg.method.server_url)  # ftnb serve ended cleanly, and the server with it
