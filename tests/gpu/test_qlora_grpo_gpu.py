"""QLoRA GRPO through ftnb.train with the colocated vLLM engine (issue 9, item 5): the exact Qwen2.5-0.5B config (random
weights, vocabulary 151,936) in 4-bit, LoRA r16, sync 'auto' (= vLLM's LoRA kernels over vLLM's own 4-bit copy).
It used to stop in vLLM's `lora_shrink` (AssertionError): the engine ran in fp32 because PEFT's k-bit preparation casts
the norms to fp32 and the engine took `model.dtype`; vLLM's LoRA kernels take fp16/bf16 only. A second fault hid behind
it: `quant_method` read 'bits_and_bytes' from the enum's name, so vLLM was never told to quantize and served a bf16 copy
(H200, 2026-12-02: 4 steps finished that way, engine bf16, trainer/engine log-prob gap 0.25-0.28).
Fixed, on the H200 on 2026-12-03: passed in 108 s; engine bf16 with quantization='bitsandbytes', sync by adapter, sleep level 1,
log-prob gap 0.0064-0.0069 over the 4 steps.
Run on the GPU machine (in its own process: one sleep-mode engine per process):
    PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_qlora_grpo_gpu.py -rP"""
import json, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

def test_qlora_grpo_runs(tmp_path):
    pytest.importorskip('vllm'); pytest.importorskip('bitsandbytes')
    # vLLM's bitsandbytes loader imports compressed_tensors, which needs loguru (missing from shared/gpu/wheels.txt on 2026-12-02)
    pytest.importorskip('loguru', reason="vLLM's 4-bit loader needs compressed_tensors' dependency loguru: add it to the GPU wheels")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]/'bench'))
    from grpo import build, prompts_file
    from ftnb.config import RunConfig
    from ftnb.engine import current_engine
    from ftnb.events import read_jsonl
    from ftnb.grpo import train
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(build('0.5b')), 'dtype': 'bfloat16'},
        'data': {'path': str(prompts_file()), 'eval_fraction': 0, 'max_length': 512},
        'adapter': {'method': 'qlora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
        'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty', 'max_len': 40}], 'num_generations': 8,
                   'max_completion_length': 64, 'engine': 'vllm', 'gpu_memory_utilization': 0.3, 'max_model_len': 256},
        'train': {'output_dir': str(tmp_path), 'run_name': 'qlora', 'max_steps': 4, 'batch_size': 16, 'lr': 1e-5,
                  'logging_steps': 1, 'save_steps': 100_000}})
    res = train(cfg)
    eng = current_engine()
    tl = read_jsonl(res.run_dir/'timeline.jsonl')
    details = sorted({f"{p['name']}:{p.get('detail')}" for row in tl for p in row['phases'] if p.get('detail')})
    m = [r for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'sampling/sampling_logp_difference/mean' in r]
    print('QLORA-GRPO', json.dumps({'status': res.status, 'step': res.step, 'engine_dtype': eng.spec.dtype,
          'quantization': eng.spec.quantization, 'details': details,
          'logp_diff': [r['sampling/sampling_logp_difference/mean'] for r in m]}))
    assert (res.status, res.step) == ('finished', 4)
    assert eng.spec.dtype == 'bfloat16' and eng.spec.quantization == 'bitsandbytes'
    assert 'sync:adapter' in details
