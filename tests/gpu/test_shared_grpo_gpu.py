"""ftnb.train with method.sync='shared' (issue 9): GRPO through TRL with one copy of the base weights. Its own file,
so that it runs in its own process: vLLM's sleep mode serves one engine per process (issue 9 item 6, still open), and
tests/gpu/test_shared_gpu.py has already started and shut down one.
    PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_shared_grpo_gpu.py -x -rP"""
import json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

def report(key, **vals): print(f'SHARED-GPU {key}: ' + json.dumps(vals), flush=True)

@pytest.fixture(scope='module')
def path():
    pytest.importorskip('vllm')
    from grpo import build
    return build('0.5b')

def test_grpo_shared_runs(path, tmp_path):
    "ftnb.train with method.sync='shared' through TRL: 4 steps, the timeline says shared, the log-prob gap stays small."
    from grpo import prompts_file
    from ftnb.config import RunConfig
    from ftnb.engine import shutdown_engine
    from ftnb.events import read_jsonl
    from ftnb.grpo import train
    shutdown_engine()
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(path), 'dtype': 'bfloat16'},
        'data': {'path': str(prompts_file()), 'eval_fraction': 0, 'max_length': 512},
        'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
        'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 40}], 'num_generations': 8,
                   'max_completion_length': 64, 'engine': 'vllm', 'gpu_memory_utilization': 0.3, 'max_model_len': 256,
                   'sync': 'shared', 'sleep_level': 1},
        'train': {'output_dir': str(tmp_path), 'run_name': 'shared', 'max_steps': 4, 'batch_size': 16, 'lr': 1e-5,
                  'logging_steps': 1, 'save_steps': 100_000}})
    res = train(cfg)
    tl = read_jsonl(res.run_dir/'timeline.jsonl')
    details = sorted({f"{p['name']}:{p.get('detail')}" for row in tl for p in row['phases'] if p.get('detail')})
    m = [r for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'sampling/sampling_logp_difference/mean' in r]
    report('grpo', status=res.status, step=res.step, details=details, logp_diff=[r['sampling/sampling_logp_difference/mean'] for r in m])
    assert (res.status, res.step) == ('finished', 4) and 'sync:shared' in details
    assert max(r['sampling/sampling_logp_difference/mean'] for r in m) < 0.05
    shutdown_engine()
