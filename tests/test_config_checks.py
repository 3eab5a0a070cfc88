"""Every combination the config refuses, and its near misses that it accepts (ftnb.config's checks).

The refusals' messages are compared word for word with tests/fixtures/config_checks.json (`python
tests/test_config_checks.py` rewrites it); each near miss differs from a refusal in one value and must pass silently,
so a check that fires too often fails here as surely as one that never fires."""
import json, sys, warnings
from pathlib import Path

import pytest
from ftnb import config as C

SNAP = Path(__file__).parent/'fixtures'/'config_checks.json'
GRPO = {'name': 'grpo', 'num_generations': 4}
REFUSED = {  # name -> config dict
    'alora without invocation': {'adapter': {'method': 'alora'}},
    'gptq_lora in bf16': {'adapter': {'method': 'gptq_lora'}, 'model': {'dtype': 'bfloat16'}},
    'fp8 with qlora': {'adapter': {'method': 'qlora'}, 'accel': {'fp8': True}},
    'qat with gptq_lora': {'adapter': {'method': 'gptq_lora'}, 'model': {'dtype': 'float16'}, 'accel': {'qat': True}},
    'fp8 and qat': {'accel': {'fp8': True, 'qat': True}},
    'qat delayed to the last step': {'accel': {'qat': True, 'qat_after_steps': 10}, 'train': {'max_steps': 10}},
    'qat delayed past the last step': {'accel': {'qat': True, 'qat_after_steps': 11}, 'train': {'max_steps': 10}},
    'lora without targets': {'adapter': {'target_modules': []}},
    'response_template with prompt_completion': {'data': {'format': 'prompt_completion', 'response_template': 'A:'}},
    'response_template with messages': {'data': {'format': 'messages', 'response_template': 'A:'}},
    'grpo batch 6 with 4 generations': {'method': GRPO, 'train': {'batch_size': 6}},
    'grpo batch 3 x 2 with 4 generations': {'method': GRPO, 'train': {'batch_size': 3, 'grad_accum': 2}},
    'grpo adapter sync with full': {'method': {**GRPO, 'sync': 'adapter'}, 'adapter': {'method': 'full'}, 'train': {'lr': 1e-5}},
    'grpo adapter sync with dora': {'method': {**GRPO, 'sync': 'adapter'}, 'adapter': {'method': 'dora'}},
    'grpo adapter sync with modules_to_save': {'method': {**GRPO, 'sync': 'adapter'}, 'adapter': {'modules_to_save': ['lm_head']}},
    'grpo merge sync with qlora': {'method': {**GRPO, 'sync': 'merge'}, 'adapter': {'method': 'qlora'}},
    'grpo merge sync with gptq_lora': {'method': {**GRPO, 'sync': 'merge'}, 'adapter': {'method': 'gptq_lora'}, 'model': {'dtype': 'float16'}},
    'overlap without split': {'data': {'overlap': 4}},
    'overlap as long as max_length': {'data': {'too_long': 'split', 'overlap': 64, 'max_length': 64}},
    'split chat samples': {'data': {'too_long': 'split', 'format': 'messages'}},
    'split prompt_completion samples': {'data': {'too_long': 'split', 'format': 'prompt_completion'}},
    'split grpo prompts': {'data': {'too_long': 'split'}, 'method': GRPO},
    'empty stop string': {'method': {**GRPO, 'stop': ['', '</answer>']}},
    'server url without a scheme': {'method': {**GRPO, 'engine': 'server', 'server_url': '127.0.0.1:8000'}},
    'server url without a port': {'method': {**GRPO, 'engine': 'server', 'server_url': 'http://127.0.0.1'}},
    'server url with a bad port': {'method': {**GRPO, 'engine': 'server', 'server_url': 'http://127.0.0.1:99999'}},
    'server with alora': {'method': {**GRPO, 'engine': 'server'}, 'adapter': {'method': 'alora', 'alora_invocation': 'A:'}},
    'server on the trainer gpu with full': {'method': {**GRPO, 'engine': 'server'}, 'adapter': {'method': 'full'}, 'train': {'lr': 1e-5}},
    'server on the trainer gpu with dora': {'method': {**GRPO, 'engine': 'server', 'server_gpu': 1, 'trainer_gpu': 1}, 'adapter': {'method': 'dora'}},
    'server on the trainer gpu with modules_to_save': {'method': {**GRPO, 'engine': 'server'}, 'adapter': {'modules_to_save': ['lm_head']}},
    'server on the trainer gpu with merge sync': {'method': {**GRPO, 'engine': 'server', 'sync': 'merge'}},
    'server with shared sync': {'method': {**GRPO, 'engine': 'server', 'sync': 'shared'}},
    'shared sync with dora': {'method': {**GRPO, 'sync': 'shared'}, 'adapter': {'method': 'dora'}},
    'shared sync with qlora': {'method': {**GRPO, 'sync': 'shared'}, 'adapter': {'method': 'qlora'}},
    'fused_lora with adapter dropout': {'accel': {'fused_lora': True}},
    'fused_lora with dora': {'accel': {'fused_lora': True}, 'adapter': {'method': 'dora', 'dropout': 0.0}},
    'fused_lora with gptq_lora': {'accel': {'fused_lora': True}, 'adapter': {'method': 'gptq_lora', 'dropout': 0.0}, 'model': {'dtype': 'float16'}},
    'fused_lora with fp8': {'accel': {'fused_lora': True, 'fp8': True}, 'adapter': {'dropout': 0.0}},
    'fused_lora with fsdp': {'accel': {'fused_lora': True, 'fsdp': True}, 'adapter': {'dropout': 0.0}},
}
ACCEPTED = [  # each one value away from a refusal above
    {'adapter': {'method': 'alora', 'alora_invocation': '<|im_start|>assistant'}},
    {'adapter': {'method': 'gptq_lora'}, 'model': {'dtype': 'float16'}},
    {'adapter': {'method': 'qlora'}}, {'accel': {'fp8': True}}, {'accel': {'qat': True}},
    {'adapter': {'method': 'lora'}, 'accel': {'qat': True}},
    {'accel': {'qat': True, 'qat_after_steps': 9}, 'train': {'max_steps': 10}},
    {'accel': {'qat': True, 'qat_after_steps': 50}, 'train': {'max_steps': -1}},   # epochs: the delay cannot be checked
    {'accel': {'qat_after_steps': 50}, 'train': {'max_steps': 10}},                 # no QAT: the delay means nothing
    {'adapter': {'method': 'full', 'target_modules': []}, 'train': {'lr': 1e-5}},
    {'data': {'format': 'text', 'response_template': 'A:'}},
    {'method': GRPO, 'train': {'batch_size': 8}}, {'method': GRPO, 'train': {'batch_size': 2, 'grad_accum': 2}},
    {'method': {**GRPO, 'sync': 'adapter'}}, {'method': {**GRPO, 'sync': 'merge'}, 'adapter': {'method': 'dora'}},
    {'method': {**GRPO, 'sync': 'adapter'}, 'adapter': {'method': 'qlora'}},
    {'adapter': {'method': 'dora'}}, {'adapter': {'modules_to_save': ['lm_head']}},
    {'data': {'too_long': 'split', 'overlap': 63, 'max_length': 64}}, {'data': {'too_long': 'split'}},
    {'data': {'too_long': 'split', 'format': 'text'}}, {'method': {**GRPO, 'stop': [' ', '</answer>']}}, {'train': {'lr': 1e-2}}, {'adapter': {'method': 'full'}, 'train': {'lr': 1e-3}},
    {'method': {**GRPO, 'engine': 'server', 'server_url': 'http://127.0.0.1:8000'}}, {'method': {**GRPO, 'engine': 'server', 'server_url': 'https://gpu-box:443'}},
    {'method': {**GRPO, 'engine': 'vllm', 'server_url': '127.0.0.1:8000'}},  # the address is read only with engine='server'
    {'method': {**GRPO, 'engine': 'vllm', 'sync': 'shared'}},  # LoRA on an unquantized base, colocated: allowed
    {'method': {'name': 'sft', 'engine': 'server', 'server_url': 'nonsense'}, 'adapter': {'method': 'full'}, 'train': {'lr': 1e-5}},
    {'method': {**GRPO, 'engine': 'server', 'server_gpu': 1}, 'adapter': {'method': 'full'}, 'train': {'lr': 1e-5}},
    {'method': {**GRPO, 'engine': 'server', 'trainer_gpu': 1}, 'adapter': {'method': 'dora'}},
    {'method': {**GRPO, 'engine': 'server', 'server_gpu': 1}, 'adapter': {'modules_to_save': ['lm_head']}},
    {'method': {**GRPO, 'engine': 'server', 'sync': 'merge', 'server_gpu': 1}}, {'method': {**GRPO, 'engine': 'server', 'sync': 'adapter'}},
    {'method': {**GRPO, 'engine': 'server'}, 'adapter': {'method': 'qlora'}},
    {'accel': {'fused_lora': True}, 'adapter': {'dropout': 0.0}}, {'accel': {'fused_lora': True}, 'adapter': {'method': 'qlora', 'dropout': 0.0}},
    {'accel': {'fused_lora': True, 'liger': True}, 'adapter': {'dropout': 0.0}}, {'accel': {'fused_lora': True}, 'adapter': {'dropout': 0.0}, 'method': GRPO},
]
WARNED = {
    'lr above the adapter line': {'train': {'lr': 1.1e-2}},
    'lr above the full line': {'adapter': {'method': 'full'}, 'train': {'lr': 1.1e-3}},
    'lm_head with all-linear': {'adapter': {'target_modules': ['all-linear', 'lm_head']}},
}

def refusal(d) -> str:
    with pytest.raises(C.ConfigError) as e: C.RunConfig.model_validate(d)
    return f'{e.value.field} | {e.value.value!r} | {e.value}'

def warning(d) -> str:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); C.RunConfig.model_validate(d)
    return ' || '.join(str(x.message) for x in w)

def snapshot() -> dict:
    return {'refused': {k: refusal(d) for k, d in REFUSED.items()}, 'warned': {k: warning(d) for k, d in WARNED.items()}}

@pytest.mark.parametrize('name', list(REFUSED))
def test_refused_word_for_word(name):
    assert refusal(REFUSED[name]) == json.loads(SNAP.read_text())['refused'][name], f'run python {__file__} if the change is meant'

@pytest.mark.parametrize('d', ACCEPTED, ids=[json.dumps(d) for d in ACCEPTED])
def test_near_misses_pass_silently(d):
    with warnings.catch_warnings(): warnings.simplefilter('error'); C.RunConfig.model_validate(d)

@pytest.mark.parametrize('name', list(WARNED))
def test_warned_word_for_word(name):
    got = warning(WARNED[name])
    assert got and got == json.loads(SNAP.read_text())['warned'][name]

if __name__ == '__main__':
    SNAP.write_text(json.dumps(snapshot(), indent=1, ensure_ascii=False) + '\n'); print(f'wrote {SNAP}')
