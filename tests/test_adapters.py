"Adapters on the offline tiny model: what trains, what saves, what errors (ftnb.models + ftnb.adapters)."
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import warnings
import pytest, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from ftnb.config import ConfigError, RunConfig
from ftnb.testing import tiny_model, tiny_tokenizer
from ftnb import adapters, models

TEXT = 'What is 12+34?\nAnswer: 46'

@pytest.fixture(scope='module')
def tok(): return tiny_tokenizer()

def cfg(**adapter): return RunConfig(adapter={'r': 4, **adapter})

def loss(model, tok):
    b = tok([TEXT], return_tensors='pt')
    return model(**b, labels=b['input_ids']).loss

def steps(model, tok, n=2, lr=1e-2):
    "A few AdamW steps on one text."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(n): loss(model, tok).backward(); opt.step(); opt.zero_grad()

def test_lora_trains_only_adapter(tok):
    m = adapters.apply(tiny_model(), cfg(), tok)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    steps(m, tok, n=3)
    lora = [n for n, _ in m.named_parameters() if 'lora_' in n]
    assert lora and {n for n, p in m.named_parameters() if p.requires_grad} == set(lora)
    for n, p in m.named_parameters():
        if n in lora: assert not torch.equal(p, before[n]), f'{n} did not move'
        else: assert torch.equal(p, before[n]), f'base weight {n} changed'

@pytest.mark.parametrize('extra', [dict(method='dora'), dict(use_rslora=True), dict(method='alora', alora_invocation='Answer:')])
def test_variants_forward_backward(tok, extra):
    m = adapters.apply(tiny_model(), cfg(**extra), tok)
    pc = m.peft_config['default']
    assert pc.use_dora == (extra.get('method') == 'dora') and pc.use_rslora == extra.get('use_rslora', False)
    if extra.get('method') == 'alora': assert tok.decode(pc.alora_invocation_tokens) == 'Answer:'
    q = m.get_base_model().model.layers[0].self_attn.q_proj
    if extra.get('method') == 'dora': assert 'default' in q.lora_magnitude_vector  # DoRA: a magnitude vector per layer
    want = pc.lora_alpha / (pc.r ** 0.5 if pc.use_rslora else pc.r)  # rsLoRA changes only the scale: alpha/sqrt(r)
    assert q.scaling['default'] == pytest.approx(want)
    if extra.get('method') != 'alora': steps(m, tok, n=1)  # B=0 at init: step once so every adapter weight gets a gradient
    loss(m, tok).backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())

def test_alora_needs_tokenizer():
    with pytest.raises(ConfigError, match='pass the tokenizer'):
        adapters.apply(tiny_model(), cfg(method='alora', alora_invocation='Answer:'))

def test_full_finetune_all_trainable(tok):
    m = adapters.apply(tiny_model(), cfg(method='full'), tok)
    assert not isinstance(m, PeftModel) and all(p.requires_grad for p in m.parameters())
    s = adapters.trainable_summary(m)
    assert s['trainable'] == s['total'] and s['pct'] == 100.0

def test_unknown_target_lists_real_names():
    with pytest.raises(ConfigError) as e: adapters.apply(tiny_model(), cfg(target_modules=['q_proj', 'query_key_value']))
    assert e.value.field == 'adapter.target_modules'
    for n in adapters.linear_names(tiny_model()): assert n in str(e.value)

def test_lm_head_only_when_named():
    m = tiny_model()
    assert 'lm_head' not in adapters.targets(cfg().adapter, m)
    with pytest.warns(UserWarning, match="means all-linear only"):
        both = cfg(target_modules=['lm_head', 'all-linear'])  # fms-hf-tuning's documented rule: all-linear only
    assert 'lm_head' not in adapters.targets(both.adapter, tiny_model())
    named = cfg(target_modules=['q_proj', 'lm_head'])
    pm = adapters.apply(m, named)
    assert adapters.targets(named.adapter, tiny_model()) == ['lm_head', 'q_proj']
    assert any(n.startswith('base_model.model.lm_head.lora_A') for n, _ in pm.named_parameters())
    assert adapters.linear_names(pm) == adapters.linear_names(tiny_model())  # PEFT wrappers are not counted twice

@pytest.mark.parametrize('method', ['lora', 'dora'])
def test_merge_and_save_roundtrip(tok, tmp_path, method):
    m = adapters.apply(tiny_model(), cfg(method=method), tok)
    steps(m, tok)
    m.eval()
    b = tok([TEXT, 'hello'], return_tensors='pt', padding=True)
    with torch.no_grad(): want = m(**b).logits
    saved = adapters.save_adapter(m, tmp_path/'adapter', tok)
    assert (saved/'adapter_model.safetensors').exists() and not (saved/'model.safetensors').exists()  # the adapter only
    from safetensors import safe_open
    with safe_open(str(saved/'adapter_model.safetensors'), 'pt') as f: keys = list(f.keys())
    assert keys and all('lora_' in k for k in keys), keys[:5]
    adapters.merge_and_save(m, tmp_path/'merged', tok)
    assert (tmp_path/'merged'/'model.safetensors').exists() and not (tmp_path/'merged'/'adapter_config.json').exists()
    back = AutoModelForCausalLM.from_pretrained(tmp_path/'merged', use_safetensors=True).eval()
    with torch.no_grad(): got = back(**b).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    reloaded = PeftModel.from_pretrained(tiny_model(), tmp_path/'adapter').eval()  # the adapter alone reproduces it too
    with torch.no_grad(): torch.testing.assert_close(reloaded(**b).logits, want, atol=1e-4, rtol=1e-4)

def test_merge_with_tied_lm_head(tok, tmp_path):
    "Merging an adapter on a tied lm_head must not change the input embeddings."
    base = tiny_model()
    base.lm_head.weight = base.get_input_embeddings().weight
    base.config.tie_word_embeddings = True
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = adapters.apply(base, cfg(target_modules=['lm_head', 'q_proj', 'v_proj']), tok)
    steps(m, tok)
    m.eval()
    b = tok([TEXT], return_tensors='pt')
    with torch.no_grad(): want = m(**b).logits
    adapters.merge_and_save(m, tmp_path)
    with torch.no_grad(): got = AutoModelForCausalLM.from_pretrained(tmp_path).eval()(**b).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

def test_alora_cannot_merge(tok, tmp_path):
    m = adapters.apply(tiny_model(), cfg(method='alora', alora_invocation='Answer:'), tok)
    with pytest.raises(ConfigError, match='cannot be merged'): adapters.merge_and_save(m, tmp_path/'merged')
    assert (adapters.save_adapter(m, tmp_path/'a')/'adapter_model.safetensors').exists()

def test_apply_twice_is_an_error(tok):
    m = adapters.apply(tiny_model(), cfg(), tok)
    with pytest.raises(ConfigError, match='already has a PEFT adapter'): adapters.apply(m, cfg(), tok)

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU error')
@pytest.mark.parametrize('method', ['qlora', 'gptq_lora'])
def test_quantized_on_cpu_is_a_clear_error(method):
    c = RunConfig(model={'dtype': 'float16'}, adapter={'method': method})
    with pytest.raises(ConfigError, match='CUDA GPU') as e: models.load_model(c)
    assert e.value.field == 'adapter.method' and e.value.value == method

def test_qlora_needs_quantized_model(tok):
    with pytest.raises(ConfigError, match='not quantized'): adapters.apply(tiny_model(), cfg(method='qlora'), tok)

def test_apply_leaves_the_global_rng_alone(tok):
    "The adapter is initialised under train.seed without touching the caller's random state."
    state = torch.random.get_rng_state()
    a = adapters.apply(tiny_model(), cfg(), tok)
    assert torch.equal(state, torch.random.get_rng_state())
    b = adapters.apply(tiny_model(), cfg(), tok)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))

def test_require_does_not_import():
    "models.require checks that a library is there without importing it (import ftnb stays light)."
    code = "import sys; from ftnb.models import require; require('playwright', 'f', 'v'); print('playwright' in sys.modules)"
    import subprocess, sys
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip() == 'False'

def test_qlora_is_nf4_with_double_quantization():
    qc = models.quant_kwargs(RunConfig(adapter={'method': 'qlora'}))['quantization_config']
    assert qc.load_in_4bit and qc.bnb_4bit_quant_type == 'nf4' and qc.bnb_4bit_use_double_quant

def test_missing_optional_library_names_the_extra():
    with pytest.raises(ConfigError, match=r'pip install "ftnb\[quant\]"') as e:
        models.require('surely_not_installed_lib', 'adapter.method', 'qlora')
    assert e.value.field == 'adapter.method'

@pytest.mark.parametrize('name,says', [('./no/such/model', 'no such model folder'),
                                       ('someone/not-cached-model', 'use a local model folder')])  # offline or online
def test_bad_model_names_are_config_errors(name, says):
    with pytest.raises(ConfigError, match=says) as e: models.load_model(RunConfig(model={'name_or_path': name}))
    assert e.value.field == 'model.name_or_path'

def test_load_model_end_to_end(tok):
    c = RunConfig(adapter={'r': 4})
    m = adapters.apply(models.load_model(c), c, models.load_tokenizer(c.model))
    assert m.dtype == models.resolve_dtype('auto') and isinstance(m, PeftModel)
    steps(m, tok, n=1)

@pytest.mark.gpu
def test_qlora_on_gpu(tok, tmp_path):
    "Mirrors the #| gpu cells: 4-bit load, LoRA on it, a step that moves only the adapter, no merge into 4-bit."
    c = RunConfig(adapter={'method': 'qlora', 'r': 8})
    m = adapters.apply(models.load_model(c), c, models.load_tokenizer(c.model))
    assert m.get_base_model().is_loaded_in_4bit and 'Linear4bit' in {type(x).__name__ for x in m.modules()}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    b = tok([TEXT], return_tensors='pt').to('cuda')
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2): m(**b, labels=b['input_ids']).loss.backward(); opt.step(); opt.zero_grad()
    assert all('lora_' in n for n, p in m.named_parameters() if not torch.equal(p, before[n]))
    assert all(p.dtype == models.resolve_dtype(c.model.dtype) for n, p in m.named_parameters() if 'lora_' in n)  # compute dtype
    assert (adapters.save_adapter(m, tmp_path/'a')/'adapter_model.safetensors').exists()
    with pytest.raises(ConfigError, match='quantized'): adapters.merge_and_save(m, tmp_path/'m')

@pytest.mark.parametrize('parent', ['layers', 'self_attn', 'model', 'v_proj'])
def test_modules_to_save_holding_adapters_is_refused(parent):
    with pytest.raises(ConfigError, match='hold no adapted layer') as e: adapters.apply(tiny_model(), cfg(modules_to_save=[parent]))
    assert e.value.field == 'adapter.modules_to_save' and 'embed_tokens' in str(e.value)

def test_large_adapter_share_warns():
    with pytest.warns(UserWarning, match=r"adapter.r=512 trains 88% .* Fix: lower adapter.r"):
        adapters.apply(tiny_model(), cfg(r=512))

@pytest.mark.parametrize('cuda,bf16,want', [(False, False, torch.float32), (True, True, torch.bfloat16), (True, False, torch.float16)])
def test_auto_dtype_on_each_kind_of_machine(monkeypatch, cuda, bf16, want):
    "`model.dtype='auto'`: fp32 on a CPU, bf16 on a GPU that has it (Ampere and newer), fp16 on an older GPU (the GPU answers are faked)."
    from ftnb.models import resolve_dtype
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    assert resolve_dtype('auto') == want and resolve_dtype('float16') == torch.float16
