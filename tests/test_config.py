"RunConfig: defaults, YAML/JSON round trips, fms import, and the help text shared by the CLI."
import json, re, warnings
import pytest
from ftnb import config as C
from ftnb.cli import fields_help

def odd_config():
    return C.apply_sets(C.RunConfig(), ['adapter.method=alora', 'adapter.alora_invocation=<|im_start|>assistant',
        'adapter.target_modules=[q_proj, v_proj]', 'data.path=data/train.csv', 'data.too_long=drop', 'train.lr=3e-5',
        'train.resume_from=latest', 'accel.gradient_checkpointing=true', 'method.name=pretrain'])

@pytest.mark.parametrize('suffix', ['.yaml', '.yml', '.json'])
def test_round_trip(tmp_path, suffix):
    cfg = odd_config()
    p = C.save(cfg, tmp_path/f'c{suffix}')
    assert C.load(p) == cfg
    assert C.load(C.save(C.load(p), tmp_path/f'again{suffix}')).model_dump() == cfg.model_dump()

def test_defaults_are_valid_and_complete():
    cfg = C.RunConfig()
    assert cfg.check() is cfg
    assert set(C.to_dict(cfg)) == {'model', 'data', 'adapter', 'method', 'train', 'accel'}

def test_every_field_has_help_and_cli_shows_it():
    import subprocess, sys
    from pathlib import Path
    ftnb = str(Path(sys.executable).parent/'ftnb')  # the installed command's real --help output
    h = subprocess.run([ftnb, 'train', '--help'], capture_output=True, text=True, check=True).stdout
    assert fields_help() in h
    for part, pf in C.RunConfig.model_fields.items():
        assert pf.description
        for name, f in pf.annotation.model_fields.items():
            assert f.description, f'{part}.{name} has no help text'
            assert f'{part}.{name} (default' in h and f.description in h

def test_schema_is_json():
    s = json.loads(json.dumps(C.json_schema()))
    assert s['properties']['adapter']['description']

def test_fms_file_loads(tmp_path):
    p = tmp_path/'fms.json'
    p.write_text(json.dumps({'model_name_or_path': 'm', 'training_data_path': 'd.jsonl', 'output_dir': 'o/r', 'peft_method': 'lora',
                             'r': 4, 'lora_alpha': 8, 'num_train_epochs': 2, 'learning_rate': 1e-4, 'torch_dtype': 'float16', 'tokenizer_name_or_path': 't'}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        cfg = C.load(p)
    assert (cfg.model.name_or_path, cfg.adapter.r, cfg.train.epochs, cfg.model.dtype) == ('m', 4, 2, 'float16')
    assert any('tokenizer_name_or_path' in str(x.message) for x in w)

def test_set_never_evaluates():
    cfg = C.apply_sets(C.RunConfig(), ['train.run_name=__import__("os").system("echo hi")'])
    assert cfg.train.run_name == '__import__("os").system("echo hi")'

@pytest.mark.parametrize('val,want', [('q_proj', ['q_proj']), ('q_proj,v_proj', ['q_proj', 'v_proj']), ('[q_proj, v_proj]', ['q_proj', 'v_proj'])])
def test_set_target_modules_one_name_is_a_list(val, want):
    assert C.apply_sets(C.RunConfig(), [f'adapter.target_modules={val}']).adapter.target_modules == want

def test_set_numbers_still_coerce_and_bools_stay_bools():
    c = C.apply_sets(C.RunConfig(), ['adapter.r=8', 'train.lr=1e-3', 'data.packing=true', 'accel.gradient_checkpointing=false', 'train.epochs=2'])
    assert (c.adapter.r, c.train.lr, c.data.packing, c.accel.gradient_checkpointing, c.train.epochs) == (8, 1e-3, True, False, 2.0)

@pytest.mark.parametrize('text,says', [('adapter:\n  r: yes\n', "adapter.r=True: a yes/no value"), ('train:\n  lr: on\n', 'train.lr=True'),
                                       ('method:\n  sleep_level: true\n', 'method.sleep_level=True'),
                                       ('train:\n  run_name: 2024\n', 'run_name: "2024"'), ('train:\n  max_steps: 0\n', 'use -1'),
                                       ('train:\n  max_steps: -5\n', 'use -1'), ('train:\n  seed: -1\n', '>= 0'), ('train:\n  seed: 4294967296\n', '<= 4294967295')])
def test_yaml_values_pydantic_would_bend(tmp_path, text, says):
    p = tmp_path/'c.yaml'; p.write_text(text)
    with pytest.raises(C.ConfigError, match=re.escape(says)): C.load(p)

def test_set_run_name_number_says_how_to_quote():
    with pytest.raises(C.ConfigError, match=re.escape("""--set "train.run_name='2024'\"""")): C.apply_sets(C.RunConfig(), ['train.run_name=2024'])
    assert C.apply_sets(C.RunConfig(), ["train.run_name='2024'"]).train.run_name == '2024'

@pytest.mark.parametrize('lr,method,warns', [(1e6, 'lora', True), (2e-2, 'lora', True), (5e-3, 'lora', False), (5e-3, 'full', True), (2e-5, 'full', False)])
def test_implausible_lr_warns(lr, method, warns):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        C.RunConfig(adapter={'method': method}, train={'lr': lr})
    assert any('is far above' in str(x.message) for x in w) == warns

FMS = {'model_name_or_path': 'm', 'peft_method': 'lora', 'torch_dtype': 'float16'}

def test_fms_acceleration_keys_are_kept():
    c = C.from_fms({**FMS, 'padding_free': ['huggingface'], 'fast_kernels': [True, True, True], 'auto_gptq': ['triton_v2'],
                    'dataset_conversation_field': 'msgs', 'max_grad_norm': 0.5, 'save_total_limit': 3})
    assert (c.data.padding_free, c.accel.liger, c.adapter.method, c.data.messages_field, c.train.max_grad_norm, c.train.save_total_limit) == \
           (True, True, 'gptq_lora', 'msgs', 0.5, 3)
    assert C.from_fms({**FMS, 'bnb_qlora': ['nf4'], 'torch_dtype': 'bfloat16'}).adapter.method == 'qlora'
    tmpl = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert C.from_fms({**FMS, 'chat_template': tmpl}).data.chat_template == tmpl  # fms' chat_template: ftnb's data.chat_template

def test_fms_unknown_key_is_refused_known_ones_warn():
    with pytest.raises(C.ConfigError, match="did you mean 'per_device_train_batch_size'"): C.from_fms({**FMS, 'per_device_train_batchsize': 4})
    with pytest.warns(UserWarning, match='ignored: bf16, save_strategy'): C.from_fms({**FMS, 'bf16': True, 'save_strategy': 'steps'})

def test_fms_lm_head_rule_is_fms_hf_tunings():
    with pytest.warns(UserWarning, match=r"means all-linear only\). To train lm_head too, name it in adapter.modules_to_save"):
        c = C.from_fms({**FMS, 'target_modules': ['lm_head', 'all-linear']})
    lin = ['q_proj', 'v_proj', 'lm_head']
    assert C.check_targets(c.adapter, lin) == ['q_proj', 'v_proj']

@pytest.mark.parametrize('name,raw', [('dir', None), ('latin1.yaml', 'r: caf\xe9\n'.encode('latin-1')), ('twice.yaml', b'train:\n  lr: 1\n  lr: 2\n')])
def test_config_file_faults_are_config_errors(tmp_path, name, raw):
    p = tmp_path/name
    p.mkdir() if raw is None else p.write_bytes(raw)
    with pytest.raises(C.ConfigError) as e: C.load(p)
    assert e.value.field == 'config file' and str(p) in str(e.value)

@pytest.mark.parametrize('key,value,given,want', [
    ('peft_method', None, {}, 'full'), ('peft_method', 'none', {}, 'full'), ('peft_method', 'LoRA', {}, 'lora'),
    ('peft_method', 'alora', {}, 'alora'),
    ('auto_gptq', [], {'peft_method': 'lora'}, None), ('auto_gptq', ['triton_v2'], {'peft_method': 'lora'}, 'gptq_lora'),
    ('bnb_qlora', ['nf4'], {'peft_method': 'LORA'}, 'qlora'), ('bnb_qlora', None, {}, None),
    ('padding_free', ['huggingface'], {}, True), ('padding_free', [], {}, False), ('padding_free', True, {}, True),
    ('fast_kernels', [True, True, True], {}, True), ('fast_kernels', [False], {}, False), ('fast_kernels', 0, {}, False),
    ('use_flash_attn', True, {}, 'flash_attention_2'), ('use_flash_attn', False, {}, 'sdpa'),
    ('resume_from_checkpoint', True, {}, 'latest'), ('resume_from_checkpoint', 'out/checkpoint-5', {}, 'out/checkpoint-5'),
    ('resume_from_checkpoint', False, {}, None), ('resume_from_checkpoint', '', {}, None),
    ('torch_dtype', 'bf16', {}, 'bfloat16'), ('torch_dtype', 'fp16', {}, 'float16'), ('torch_dtype', 'fp32', {}, 'float32'),
    ('torch_dtype', 'bfloat16', {}, 'bfloat16'),
    ('target_modules', 'q_proj', {}, ['q_proj']), ('target_modules', ['q_proj', 'v_proj'], {}, ['q_proj', 'v_proj']),
    ('modules_to_save', 'lm_head', {}, ['lm_head']), ('learning_rate', 1e-4, {}, 1e-4)])
def test_fms_value_each_branch(key, value, given, want):
    "One fms-hf-tuning value in ftnb's spelling: each branch of the mapping, both ways where it has two."
    assert C._fms_value(key, value, given) == want

@pytest.mark.parametrize('key,value,given,msg', [
    ('peft_method', 'pt', {}, "peft_method='pt': ftnb does not support this peft_method. Fix: use 'lora', 'alora' or None (full fine-tuning)"),
    ('auto_gptq', ['triton_v2'], {'peft_method': None}, "auto_gptq=['triton_v2']: fms-hf-tuning's quantized LoRA runs with peft_method 'lora' only. Fix: set peft_method to 'lora'"),
    ('bnb_qlora', ['nf4'], {}, "bnb_qlora=['nf4']: fms-hf-tuning's quantized LoRA runs with peft_method 'lora' only. Fix: set peft_method to 'lora'")])
def test_fms_value_refusals(key, value, given, msg):
    with pytest.raises(C.ConfigError) as e: C._fms_value(key, value, given)
    assert str(e.value) == msg and e.value.field == key and e.value.value == value

def test_from_fms_output_dir_and_full():
    "fms' output_dir is the run folder itself; no peft_method means full fine-tuning; a None value keeps ftnb's default."
    c = C.from_fms({'model_name_or_path': 'm', 'output_dir': 'out/exp/run-7', 'auto_gptq': None, 'learning_rate': 3e-4})
    assert (c.train.output_dir, c.train.run_name, c.adapter.method, c.train.lr) == ('out/exp', 'run-7', 'full', 3e-4)
    assert C.from_fms({'model_name_or_path': 'm', 'peft_method': None}).adapter.method == 'full'
    d = C.from_fms({'model_name_or_path': 'm', 'peft_method': 'lora', 'bnb_qlora': ['nf4'], 'r': 4})
    assert (d.adapter.method, d.adapter.r, d.train.output_dir, d.train.run_name) == ('qlora', 4, C.TrainCfg().output_dir, C.TrainCfg().run_name)


# Fields that code reads by name through a mapping (e.g. getattr(cfg, 'x') or a dict of field names) rather than as
# `.x`; each entry names where. Empty today: every field is read as an attribute somewhere.
READ_BY_NAME: dict[str, str] = {}

def test_every_field_is_read_by_some_code():
    "No config field that nothing uses: each is read as `.name` in a module other than the schema and the generic UI/CLI."
    import re
    from pathlib import Path
    import ftnb
    # config.py defines and checks the fields; widgets.py and cli.py handle every field generically (from the schema),
    # so a read there proves nothing. A field read only by a check in config.py counts as unread.
    src = {p.name: p.read_text() for p in Path(ftnb.__file__).parent.glob('*.py')
           if p.name not in ('config.py', '_modidx.py', 'widgets.py', 'cli.py', '__init__.py')}
    unread = [f"{part}.{name}" for part, f in C.RunConfig.model_fields.items() for name in f.annotation.model_fields
              if f'{part}.{name}' not in READ_BY_NAME and not any(re.search(rf'\.{name}\b', s) for s in src.values())]
    assert not unread, f'config fields that no code reads: {unread}'

def test_add_tokens_rules():
    from ftnb.config import ConfigError, RunConfig
    with pytest.raises(ConfigError, match="model.add_tokens.*GRPO's vLLM engine loads the base model's vocabulary"):
        RunConfig.model_validate({'model': {'add_tokens': ['<think>']}, 'method': {'name': 'grpo', 'rewards': [{'name': 'length_penalty'}]}})
    with pytest.raises(ConfigError, match='model.add_tokens.*an empty token cannot be added'): RunConfig(model={'add_tokens': ['<a>', ' ']})
    assert RunConfig(model={'add_tokens': ['<a>']}).model.add_tokens == ['<a>']

def test_config_warnings_once_per_object_at_the_callers_line():
    "A run checks its config again (cfg.check()): the lr warning is not repeated, and it points at the user's line, not pydantic's."
    from ftnb.config import RunConfig
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        c = RunConfig(train={'lr': 1.0}); c.check(); c.check()
        c.train.lr = 2.0; c.check()           # a changed value warns again
        RunConfig(train={'lr': 1.0})          # so does another object
    got = [(str(x.message).split(' is ')[0], x.filename) for x in w if 'is far above' in str(x.message)]
    assert got == [('train.lr=1', __file__), ('train.lr=2', __file__), ('train.lr=1', __file__)], got
