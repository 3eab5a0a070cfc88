"RunConfig: defaults, YAML/JSON round trips, fms import, and the help text shared by the CLI."
import json, warnings
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
    h = fields_help()
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
                             'r': 4, 'lora_alpha': 8, 'num_train_epochs': 2, 'learning_rate': 1e-4, 'torch_dtype': 'float16', 'foo': 1}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        cfg = C.load(p)
    assert (cfg.model.name_or_path, cfg.adapter.r, cfg.train.epochs, cfg.model.dtype) == ('m', 4, 2, 'float16')
    assert any('foo' in str(x.message) for x in w)

def test_set_never_evaluates():
    cfg = C.apply_sets(C.RunConfig(), ['train.run_name=__import__("os").system("echo hi")'])
    assert cfg.train.run_name == '__import__("os").system("echo hi")'
