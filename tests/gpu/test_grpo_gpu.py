"""20 GRPO steps with LoRA on a Qwen2-shaped ~0.48B model (random weights built here) with ftnb's colocated vLLM engine
and sleep mode on. Run on the GPU machine: PYTHONPATH=/tmp/site pytest -m gpu tests/gpu/test_grpo_gpu.py -rP"""
import json, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

def test_twenty_grpo_steps_with_sleep(tmp_path):
    pytest.importorskip('vllm')
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]/'bench'))
    from grpo import build, prompts_file
    from ftnb.config import RunConfig
    from ftnb.events import read_jsonl
    from ftnb.sft import train
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(build('0.5b')), 'dtype': 'bfloat16'},
        'data': {'path': str(prompts_file()), 'eval_fraction': 0, 'max_length': 64},
        'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
        'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 40}], 'num_generations': 8,
                   'max_completion_length': 64, 'engine': 'vllm', 'sleep_level': 1, 'gpu_memory_utilization': 0.3, 'max_model_len': 256},
        'train': {'output_dir': str(tmp_path), 'run_name': 'grpo20', 'max_steps': 20, 'batch_size': 16, 'lr': 1e-5,
                  'logging_steps': 1, 'save_steps': 100_000}})
    res = train(cfg)
    assert (res.status, res.step) == ('finished', 20)
    tl = read_jsonl(res.run_dir/'timeline.jsonl')
    names = {p['name'].split(':')[0] for row in tl for p in row['phases']}
    print('GRPO-GPU', json.dumps({'steps': res.step, 'timeline_rows': len(tl), 'phases': sorted(names),
          'rollout_files': len(list((res.run_dir/'rollouts').glob('*.parquet')))}))
    assert len(tl) == 20 and {'generate', 'sleep'} <= names
    assert len(list((res.run_dir/'rollouts').glob('*.parquet'))) == 20
