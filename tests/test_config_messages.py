"""Every message the config module can give, word for word, and the small helpers behind them.

Written against the survivors of a mutation run (issue 14): docs/errors.md pins the common errors; these pin the rest
(the --set parser, the config file reader, each kind of pydantic error, fms keys nothing maps), so that a changed word,
a dropped suggestion or a lost line number fails a test here rather than reaching a user unnoticed."""
import json, os, warnings
import pytest
from typing import Literal
from ftnb import config as C
from ftnb.config import RunConfig, AdapterCfg, ConfigError, DataError, apply_sets, from_dict, check_targets

PARTS = 'model, data, adapter, method, train, accel'
ADAPTER_FIELDS = 'method, r, alpha, dropout, target_modules, use_rslora, alora_invocation, modules_to_save'
BOOL = 'a yes/no value (YAML reads yes, no, on, off, true and false as booleans), but this field takes'

def msg(f) -> str:
    with pytest.raises(ConfigError) as e: f()
    return str(e.value)

@pytest.mark.parametrize('sets,want', [
    (['adapter.r'], "--set='adapter.r': no = sign. Fix: write it as part.field=value, e.g. adapter.r=8"),
    (['adapter=1'], f"--set='adapter=1': unknown key 'adapter'. Fix: use part.field with part one of {PARTS}"),
    (['adapter.r.x=1'], f"--set='adapter.r.x=1': unknown key 'adapter.r.x'. Fix: use part.field with part one of {PARTS}"),
    (['nope.r=1'], f"--set='nope.r=1': unknown key 'nope.r'. Fix: use part.field with part one of {PARTS}"),
    (['adapter.r=yes'], f"adapter.r=True: {BOOL} a whole number (in --set). Fix: write a whole number, e.g. adapter.r=16"),
    (['train.lr=yes'], f"train.lr=True: {BOOL} a number (in --set). Fix: write a number, e.g. train.lr=0.0002"),
    (['adapter.target_modules=yes'], f"adapter.target_modules=True: {BOOL} a list (in --set). Fix: write a list, e.g. adapter.target_modules=['all-linear']"),
    (['data.path=yes'], f"data.path=True: {BOOL} text (in --set). Fix: write text, e.g. data.path=toy:addition"),
    (['train.max_steps=0'], "train.max_steps=0: not a step count (in --set). Fix: use -1 to train for train.epochs, or a positive number of optimizer steps"),
    (['train.max_steps=-2'], "train.max_steps=-2: not a step count (in --set). Fix: use -1 to train for train.epochs, or a positive number of optimizer steps"),
    (['adapter.r=0'], "adapter.r=0: Input should be greater than or equal to 1 (in --set). Fix: use a value >= 1 (LoRA rank: higher = more capacity and memory.)"),
    (['method.gpu_memory_utilization=1'], "method.gpu_memory_utilization=1: Input should be less than 1 (in --set). Fix: use a value < 1.0 (GRPO: share of GPU memory the vLLM engine may take.)"),
    (['train.run_name=7'], "train.run_name=7: Input should be a valid string: YAML reads 7 as a number (in --set). Fix: quote it so it stays text: --set \"train.run_name='7'\""),
    (['adapter.rank=8'], f"adapter.rank=8: unknown field (in --set). Fix: did you mean 'r'? valid fields: {ADAPTER_FIELDS}"),  # an alias
    (['adapter.alfa=8'], f"adapter.alfa=8: unknown field (in --set). Fix: did you mean 'alpha'? valid fields: {ADAPTER_FIELDS}"),  # a near miss
    (['adapter.zzzzzz=1'], f"adapter.zzzzzz=1: unknown field (in --set). Fix: valid fields: {ADAPTER_FIELDS}"),  # nothing near
    (['adapter.method=xx'], "adapter.method='xx': Input should be 'full', 'lora', 'dora', 'alora', 'qlora' or 'gptq_lora' (in --set). Fix: use one of 'full', 'lora', 'dora', 'alora', 'qlora' or 'gptq_lora'"),
    (['adapter.r=abc'], "adapter.r='abc': Input should be a valid integer, unable to parse string as an integer (in --set). Fix: see `ftnb config --schema` for the field's type and range"),
    (['adapter.r=none'], "adapter.r=None: Input should be a valid integer (in --set). Fix: see `ftnb config --schema` for the field's type and range")])
def test_set_messages(sets, want):
    assert msg(lambda: apply_sets(RunConfig(), sets)) == want

@pytest.mark.parametrize('d,source,want', [
    ({'adapter': {'r': True}}, 'my.yaml', f"adapter.r=True: {BOOL} a whole number (in my.yaml). Fix: write a whole number, e.g. r: 16"),
    ({'model': {'dtype': True}}, 'config', f"model.dtype=True: {BOOL} one of 'auto', 'float32', 'bfloat16', 'float16' (in config). Fix: write one of 'auto', 'float32', 'bfloat16', 'float16', e.g. dtype: auto"),
    ({'train': {'run_name': 5}}, 'my.yaml', 'train.run_name=5: Input should be a valid string: YAML reads 5 as a number (in my.yaml). Fix: quote it so it stays text: run_name: "5"'),
    ({'train': {'lr': 0}}, 'config', "train.lr=0: Input should be greater than 0 (in config). Fix: use a value > 0.0 (Peak learning rate: ~2e-4 for LoRA, ~2e-5 for full fine-tuning.)"),
    ({'adapter': {'r': 'x'}}, 'config', "adapter.r='x': Input should be a valid integer, unable to parse string as an integer (in config). Fix: see `ftnb config --schema` for the field's type and range")])
def test_file_messages_say_it_in_file_syntax(d, source, want):
    "From a file, the fix is written as the file would hold it (`r: 16`), not as a --set."
    assert msg(lambda: from_dict(d, source=source)) == want

def test_from_dict_source_defaults_to_config():
    assert msg(lambda: from_dict({'train': {'lr': 0}})).endswith('(in config). Fix: use a value > 0.0 (Peak learning rate: ~2e-4 for LoRA, ~2e-5 for full fine-tuning.)')

def test_set_values_that_mean_nothing_and_text_with_signs():
    c = apply_sets(RunConfig(), ['data.eval_path=null'])
    assert c.data.eval_path is None
    for none in ('none', 'NULL', '~', '', '  '): assert apply_sets(c, [f'data.response_template={none}']).data.response_template is None
    # YAML would read `#x` as a comment (None) and cut `a=b` at nothing: both stay the text that was typed
    assert apply_sets(c, ['data.response_template=#x']).data.response_template == '#x'
    assert apply_sets(c, ['data.response_template=a=b']).data.response_template == 'a=b'
    assert apply_sets(c, ['method.stop=[a=b]']).method.stop == ['a=b']
    assert apply_sets(c, [' adapter.r =8']).adapter.r == 8  # spaces around the key are dropped
    assert C._scalar('[1') == '[1'  # not YAML: kept as typed, and the field's check speaks

@pytest.mark.parametrize('name,raw,want', [
    ('bad.yaml', b'train:\n  lr: [1\n', "not valid YAML at line 3: expected ',' or ']', but got '<stream end>'. Fix: fix the YAML syntax there"),
    ('bad.json', b'{"train": {"lr": 1,}}', "not valid JSON at line 1: Expecting property name enclosed in double quotes. Fix: fix the JSON syntax there"),
    ('twice.json', b'{"train": {"lr": 1, "lr": 2}}', "the key 'lr' is given twice. Fix: keep one 'lr' and delete the other"),
    ('twice.yaml', b'train:\n  lr: 1\n  lr: 2\n', "the key 'lr' is given twice (lines 2 and 3). Fix: keep one 'lr' and delete the other"),
    ('list.yaml', b'- 1\n- 2\n', "the top level is not a mapping. Fix: write a mapping such as `adapter: {r: 8}`"),
    ('latin1.yaml', 'r: caf\xe9\n'.encode('latin-1'), "not UTF-8 text (byte 6: b'\\xe9'). Fix: save the file as UTF-8 text"),
    ('missing.yaml', None, "file not found. Fix: check the path")])
def test_config_file_messages(tmp_path, name, raw, want):
    p = tmp_path/name
    if raw is not None: p.write_bytes(raw)
    assert msg(lambda: C.load(p)) == f"config file={str(p)!r}: {want}"

def test_config_folder_message(tmp_path):
    assert msg(lambda: C.load(tmp_path)) == f"config file={str(tmp_path)!r}: this is a folder, not a file. Fix: give the path of a .yaml or .json file, e.g. {tmp_path/'config.yaml'}"

def test_bom_empty_and_nested_files(tmp_path):
    (tmp_path/'bom.yaml').write_bytes('\ufefftrain:\n  lr: 0.001\n'.encode('utf-8'))  # Notepad's UTF-8 starts with a BOM
    assert C.load(tmp_path/'bom.yaml').train.lr == 0.001
    (tmp_path/'empty.yaml').write_text('')
    assert C.load(tmp_path/'empty.yaml') == RunConfig()
    # a key repeated at different depths is not "given twice"; one repeated deeper is
    (tmp_path/'deep.yaml').write_text('train:\n  lr: 0.001\nmethod:\n  rewards:\n  - {name: a, weight: 1, name: b}\n')
    assert "the key 'name' is given twice (lines 5 and 5)" in msg(lambda: C.load(tmp_path/'deep.yaml'))
    (tmp_path/'deep.json').write_text('{"train": {"lr": 0.001}, "method": {"name": "sft"}}')
    assert C.load(tmp_path/'deep.json').method.name == 'sft'

def test_save_makes_folders_and_picks_the_format(tmp_path):
    cfg = apply_sets(RunConfig(), ['adapter.r=4'])
    j = C.save(cfg, tmp_path/'a'/'b'/'c.json')
    assert j == tmp_path/'a'/'b'/'c.json' and json.loads(j.read_text())['adapter']['r'] == 4
    assert j.read_text().startswith('{\n  "model": {\n    "name_or_path"')  # indented JSON, parts in schema order
    y = C.save(cfg, tmp_path/'d'/'c.yaml')
    assert y.read_text().startswith('model:\n  name_or_path: tiny-qwen2\n')  # YAML in schema order, not sorted
    assert C.to_dict(cfg)['adapter']['target_modules'] == ['all-linear'] and isinstance(C.to_dict(cfg)['train']['lr'], float)

def test_to_dict_is_json_data():
    d = C.to_dict(apply_sets(RunConfig(), ['method.name=grpo']))
    assert json.loads(json.dumps(d)) == d and d['method']['rewards'] == [{'name': 'exact_answer', 'weight': 1.0}]

@pytest.mark.parametrize('targets,want', [
    (['all-linear'], ['o_proj', 'q_proj', 'v_proj']), (['lm_head'], ['lm_head']), (['lm_head', 'all-linear'], ['o_proj', 'q_proj', 'v_proj']),
    (['q_proj', 'q_proj'], ['q_proj']), (['v_proj', 'q_proj'], ['q_proj', 'v_proj']), (['q_proj', 'lm_head'], ['lm_head', 'q_proj'])])
def test_check_targets(targets, want):
    assert check_targets(AdapterCfg(target_modules=targets), ['q_proj', 'v_proj', 'lm_head', 'o_proj']) == want

def test_check_targets_message():
    assert msg(lambda: check_targets(AdapterCfg(target_modules=['query']), ['v_proj', 'q_proj', 'lm_head'])) == \
        "adapter.target_modules='query': the model has no linear layer of that name. Fix: use 'all-linear' or some of: lm_head, q_proj, v_proj"

@pytest.mark.parametrize('ann,takes_bool,want', [
    (bool, True, None), (int, False, 'a whole number'), (float, False, 'a number'), (str, False, 'text'), (list[str], False, 'a list'),
    (Literal['a', 'b'], False, "one of 'a', 'b'"), (Literal['auto', False], True, "one of 'auto', False"), (int | None, False, 'a whole number'),
    (float | None, False, 'a number'), (list[str] | None, False, 'a list'), (dict, False, 'another value'), (Literal['x'] | None, False, None)])
def test_what_a_field_takes(ann, takes_bool, want):
    assert C._takes_bool(ann) is takes_bool
    if want: assert C._want(ann) == want

@pytest.mark.parametrize('v,ok', [(-1, True), (1, True), (7, True), (0, False), (-2, False), (-100, False)])
def test_max_steps(v, ok):
    if ok: assert RunConfig(train={'max_steps': v}).train.max_steps == v
    else: assert 'not a step count' in msg(lambda: from_dict({'train': {'max_steps': v}}))

def test_error_texts_and_their_fields():
    e = ConfigError('a.b', 1, 'do x')
    assert str(e) == 'a.b=1: invalid value. Fix: do x' and (e.field, e.value, e.fix, e.problem) == ('a.b', 1, 'do x', '')
    assert str(ConfigError('a.b', 'v', 'do x', 'too big')) == "a.b='v': too big. Fix: do x"
    d = DataError('f.jsonl', 'bad')
    assert str(d) == 'f.jsonl: bad' and (d.source, d.problem, d.fix) == ('f.jsonl', 'bad', '')
    assert str(DataError('f.jsonl', 'bad', 'fix it')) == 'f.jsonl: bad. Fix: fix it'
    assert isinstance(e, C.FtnbError) and isinstance(d, C.FtnbError)

def test_field_help_schema_and_F():
    assert C.field_help('adapter.r') == 'LoRA rank: higher = more capacity and memory.'
    s = C.json_schema()
    assert s['$defs']['AdapterCfg']['properties']['r']['description'] == C.field_help('adapter.r')
    f = C.F(3, 'h', ge=1)
    assert (f.default, f.description, f.metadata[0].ge) == (3, 'h', 1)

FMS_MAPPED = ('keys ftnb maps: ' + ', '.join(C.FMS_KEYS) + ' (other fms-hf-tuning and TrainingArguments keys are ignored with a warning)')

def test_fms_unknown_keys():
    base = {'model_name_or_path': 'm'}
    assert msg(lambda: C._fms_unknown({**base, 'learnin_rate': 1})) == \
        f"learnin_rate=1: not an fms-hf-tuning or TrainingArguments key. Fix: did you mean 'learning_rate'? {FMS_MAPPED}"
    assert msg(lambda: C._fms_unknown({**base, 'qqqqqqqqqq': 1})) == f"qqqqqqqqqq=1: not an fms-hf-tuning or TrainingArguments key. Fix: {FMS_MAPPED}"
    assert C._fms_unknown({**base, 'cache_dir': 'x', 'r': 4}) == ['cache_dir']  # fms' own key with no ftnb equivalent
    assert C._fms_unknown({**base, 'cache_dir': 'x', 'bf16': True}) == ['cache_dir', 'bf16']  # a TrainingArguments key

def test_fms_ignored_keys_warn_at_the_callers_line():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        c = C.from_fms({'model_name_or_path': 'm', 'cache_dir': 'x', 'bf16': True, 'r': 4})
    assert [str(x.message) for x in w] == ['fms-hf-tuning keys with no ftnb equivalent were ignored: cache_dir, bf16']
    assert not w[0].filename.endswith(os.path.join('ftnb', 'config.py'))  # it points at the caller, not at ftnb's own line
    assert c.adapter.r == 4 and c.adapter.method == 'full'
    assert "(in fms-hf-tuning config)" in msg(lambda: C.from_fms({'model_name_or_path': 'm', 'r': 0}))

def test_qat_delay_against_max_steps_at_the_edge():
    base = {'accel': {'qat': True, 'qat_after_steps': 1}}
    e = pytest.raises(ConfigError, from_dict, {**base, 'train': {'max_steps': 1}}).value
    assert (e.field, e.value) == ('accel.qat_after_steps', 1) and 'smaller than train.max_steps (1), or 0' in str(e)
    assert from_dict({**base, 'train': {'max_steps': 2}}).accel.qat_after_steps == 1
    assert from_dict({**base, 'train': {'max_steps': -1}}).accel.qat_after_steps == 1  # epochs: the step count is not known here

def test_alora_without_invocation_names_the_value_given():
    for v in (None, ''):
        e = pytest.raises(ConfigError, from_dict, {'adapter': {'method': 'alora', 'alora_invocation': v}}).value
        assert (e.field, e.value) == ('adapter.alora_invocation', v)

@pytest.mark.parametrize('flag', ['fp8', 'qat'])
def test_fsdp_with_layers_ftnb_swaps_itself(flag):
    e = pytest.raises(ConfigError, from_dict, {'accel': {'fsdp': True, flag: True}}).value
    assert str(e) == (f"accel.fsdp=True: ftnb swaps the linear layers for {flag.upper()} itself, and that is not made to work with FSDP2's "
                      f"sharded weights. Fix: turn accel.fsdp off (DDP: each process holds the whole model), or accel.{flag}")
    assert (e.field, e.value) == ('accel.fsdp', True)

def test_a_bool_in_a_union_counts():
    assert C._takes_bool(bool | None) and C._takes_bool(Literal['auto', True] | None) and not C._takes_bool(int | None)

def test_fms_unknown_key_after_a_known_one_is_still_refused():
    with pytest.raises(ConfigError) as e: C._fms_unknown({'model_name_or_path': 'm', 'bf16': True, 'qqqqqqqqqq': 1})
    assert e.value.field == 'qqqqqqqqqq'
