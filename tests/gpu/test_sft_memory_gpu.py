"""Memory stays flat over 200 SFT steps with gradient checkpointing on (issue 12, item 8): axolotl found a leak of about
0.47 GiB a step across the checkpoint boundary. ftnb.train on bench/grpo.py's '0.5b' model (the exact Qwen2.5-0.5B config,
vocabulary 151,936, random bf16 weights), LoRA r16 on all linear layers, `accel.gradient_checkpointing=True`, 8 samples of
96-256 tokens a step; a callback records torch.cuda.memory_allocated at the end of each step (after the optimizer step and
zero_grad: what a step leaves behind). ftnb records no per-step memory for SFT (its timeline is GRPO's), hence the callback.

Bound: at a step's end the live tensors are the weights, the LoRA parameters and their AdamW states, all allocated by the
end of step 1. Step 200 minus step 10 must stay below 64 MiB (0.32 MiB a step over 190 steps, 1/1500 of axolotl's leak
per step; one kept 8 x 256 activation of one layer, 8 x 256 x 896 x 2 bytes = 3.5 MiB, kept each step would pass 600 MiB),
and no step from 10 on may exceed step 10 by more than that either.
Run on the GPU machine (about 1 minute): PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_sft_memory_gpu.py -rP"""
import json, random, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT/'bench')]
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

STEPS, BOUND_MIB = 200, 64

def test_200_sft_steps_with_checkpointing_memory_flat(tmp_path):
    from transformers import TrainerCallback
    from grpo import build
    import ftnb
    from ftnb.config import RunConfig
    rng = random.Random(0); letters = 'abcdefghijklmnopqrstuvwxyz '
    data = tmp_path/'d.jsonl'
    data.write_text(''.join(json.dumps({'prompt': ''.join(rng.choice(letters) for _ in range(rng.randint(16, 64))),
                                        'completion': ''.join(rng.choice(letters) for _ in range(rng.randint(80, 190)))}) + '\n' for _ in range(256)))
    mem, t = [], []
    class Mem(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize(); mem.append(torch.cuda.memory_allocated()); t.append(time.perf_counter())
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(build('0.5b')), 'dtype': 'bfloat16'},
        'data': {'path': str(data), 'eval_fraction': 0, 'max_length': 256}, 'adapter': {'method': 'lora', 'r': 16, 'alpha': 32, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': 'mem', 'max_steps': STEPS, 'batch_size': 8, 'lr': 2e-4, 'logging_steps': 10,
                  'save_steps': 100_000, 'seed': 0}, 'accel': {'gradient_checkpointing': True}})
    res = ftnb.train(cfg, callbacks=[Mem()])
    assert (res.status, res.step, len(mem)) == ('finished', STEPS, STEPS)
    assert res.trainer.args.gradient_checkpointing
    mib = [m / 2**20 for m in mem]
    growth, worst = mib[STEPS - 1] - mib[9], max(mib[9:]) - mib[9]
    slope = (mib[STEPS - 1] - mib[19]) / (STEPS - 20)
    print('SFT-MEMORY-GPU', json.dumps({'steps': STEPS, 'gradient_checkpointing': True, 'step1_mib': round(mib[0], 1), 'step10_mib': round(mib[9], 1),
          'step200_mib': round(mib[-1], 1), 'growth_10_to_200_mib': round(growth, 2), 'max_above_step10_mib': round(worst, 2),
          'mib_per_step_20_to_200': round(slope, 4), 'peak_allocated_gib': round(torch.cuda.max_memory_allocated() / 2**30, 2),
          's_per_step': round((t[-1] - t[9]) / (STEPS - 10), 4), 'bound_mib': BOUND_MIB, 'every_20th_mib': [round(x, 1) for x in mib[::20]]}))
    assert growth < BOUND_MIB and worst < BOUND_MIB, (growth, worst)
