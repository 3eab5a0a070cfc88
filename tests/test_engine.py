"ftnb.engine on a CPU without vLLM: the HF fallback, sync choices, merging by copy against the bf16 drift of merging in place, checks, and the TRL hook."
import math
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config
from peft import LoraConfig, get_peft_model
from ftnb.config import ConfigError
from ftnb import engine as E
from ftnb.engine import (Completions, EngineGeneration, EngineSpec, HFEngine, check_alloc_conf, choose_sync, engine_spec,
                         get_engine, hf_weights, lora_rank, merged, pick_engine, serve_trl, shutdown_engine)
from ftnb.testing import tiny_tokenizer

@pytest.fixture(scope='module')
def tok(): return tiny_tokenizer()

def tiny(tok, dtype=torch.float32, seed=0, tie=False):
    "A 2-layer Qwen2 with random weights and 32-dim heads (vLLM's CPU attention needs >= 32)."
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=tie,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype)

def lora(tok, dtype=torch.float32, **kw):
    return get_peft_model(tiny(tok, dtype), LoraConfig(r=8, lora_alpha=16, target_modules='all-linear', **kw))

@pytest.fixture(autouse=True)
def no_engine():
    yield
    shutdown_engine()

# --- HF engine ------------------------------------------------------------------------------------------------------

def test_hf_generate_shapes_seed_and_mode(tok):
    m = tiny(tok); m.train()
    e = HFEngine(m, tok)
    prompts = [tok('12+34=')['input_ids'], tok('7=')['input_ids'], tok('100+1=')['input_ids']]
    out = e.generate(prompts, n=2, max_tokens=5, temperature=1.0, top_p=0.9, seed=3, logprobs=True)
    assert isinstance(out, Completions) and [len(o) for o in out] == [2, 2, 2]
    assert all(1 <= len(c) <= 5 for o in out for c in o)
    assert [[len(l) for l in o] for o in out.logprobs] == [[len(c) for c in o] for o in out]
    assert out == e.generate(prompts, n=2, max_tokens=5, temperature=1.0, top_p=0.9, seed=3)
    assert m.training  # left in train mode
    rng = torch.get_rng_state(); e.generate(prompts, max_tokens=2, seed=1); assert torch.equal(rng, torch.get_rng_state())

def test_hf_stops_at_eos_and_keeps_it(tok):
    m = tiny(tok)
    def eos_first(mod, inp, out): out = out.clone(); out[..., tok.eos_token_id] = 1e4; return out
    m.lm_head.register_forward_hook(eos_first)  # the model always says EOS
    out = HFEngine(m, tok).generate([tok('1+1=')['input_ids']] * 2, n=3, max_tokens=6, temperature=0)
    assert all(c == [tok.eos_token_id] for o in out for c in o)

def test_hf_left_padding_greedy_and_logprobs(tok):
    m = tiny(tok)
    e = HFEngine(m, tok)
    long_, short = tok('12+34+56=')['input_ids'], tok('5=')['input_ids']
    both = e.generate([long_, short], max_tokens=6, temperature=0)
    assert both[1] == e.generate([short], max_tokens=6, temperature=0)[0]
    T = 0.7  # processed logprobs: after temperature, as vLLM's processed_logprobs
    out = e.generate([short], max_tokens=4, temperature=T, seed=0, logprobs=True)
    seq = torch.tensor([short + out[0][0]])
    with torch.no_grad(): logits = m(seq).logits[0, len(short) - 1:-1] / T
    ref = logits.log_softmax(-1).gather(-1, seq[0, len(short):, None])[:, 0]
    assert torch.allclose(torch.tensor(out.logprobs[0][0]), ref, atol=1e-4)

@pytest.mark.parametrize('top_k,top_p', [(5, 1.0), (0, 0.6)])
def test_hf_logprobs_after_top_k_and_top_p(tok, top_k, top_p):
    "The log-probs are those of the processed distribution (temperature, then top-k / top-p), as vLLM's processed_logprobs."
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    m, short, T = tiny(tok), tok('5=')['input_ids'], 0.9
    out = HFEngine(m, tok).generate([short], max_tokens=4, temperature=T, top_p=top_p, top_k=top_k, seed=0, logprobs=True)
    seq = torch.tensor([short + out[0][0]])
    warp = LogitsProcessorList([TemperatureLogitsWarper(T)] + ([TopKLogitsWarper(top_k)] if top_k else []) + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    with torch.no_grad(): logits = m(seq).logits[0]
    ref = torch.stack([warp(seq[:, :i], logits[None, i - 1])[0].log_softmax(-1)[seq[0, i]] for i in range(len(short), seq.shape[1])])
    plain = (logits[len(short) - 1:-1] / T).log_softmax(-1).gather(-1, seq[0, len(short):, None])[:, 0]
    assert torch.allclose(torch.tensor(out.logprobs[0][0]), ref, atol=1e-4)
    assert not torch.allclose(ref, plain, atol=1e-3)  # the cut changes the numbers: a check against logits / T would fail

def test_hf_phases(tok):
    e = HFEngine(tiny(tok), tok)
    e.generate([[1, 2]], max_tokens=2)
    ph = e.drain_phases()
    assert [p['name'] for p in ph] == ['generate'] and ph[0]['end'] >= ph[0]['start']
    assert (ph[0]['mem_gib'] is None) == (not (torch.cuda.is_available() and torch.cuda.is_initialized()))  # a number once CUDA is up
    assert set(ph[0]) == {'name', 'start', 'end', 'mem_gib'} and e.phases == []

# --- choosing the engine and the sync ---------------------------------------------------------------------------------

def test_get_engine_on_cpu_is_hf_and_reused(tok):
    m1, m2 = tiny(tok), tiny(tok, seed=1)
    e = get_engine(m1, tokenizer=tok)
    assert isinstance(e, HFEngine) and e.model is m1 and E.current_engine() is e
    assert get_engine(m2) is e and e.model is m2 and e.tokenizer is tok
    shutdown_engine()
    assert E.current_engine() is None
    with pytest.raises(ConfigError, match='training model itself'): get_engine('/some/folder', engine='hf')

@pytest.mark.parametrize('has_vllm,cuda,want', [(True, True, 'vllm'), (True, False, 'hf'), (False, True, 'hf'), (False, False, 'hf')])
def test_pick_engine_auto(tok, monkeypatch, has_vllm, cuda, want):
    monkeypatch.setattr(E, 'vllm_available', lambda: has_vllm)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    assert pick_engine('auto', tiny(tok)) == want  # vLLM only with vLLM installed and a GPU

def test_pick_engine(tok):
    assert pick_engine('auto', lora(tok, alora_invocation_tokens=[5, 6])) == 'hf'  # vLLM has no aLoRA
    assert pick_engine('hf') == 'hf'
    with pytest.raises(ConfigError, match="'auto', 'vllm' or 'hf'"): pick_engine('turbo')
    if not E.vllm_available():
        with pytest.raises(ConfigError, match='install-vllm-cpu'): pick_engine('vllm')

def test_choose_sync_and_rank(tok):
    assert choose_sync(tiny(tok)) == 'full'
    assert choose_sync(lora(tok)) == 'merge' and choose_sync(lora(tok, dtype=torch.bfloat16)) == 'merge'
    assert choose_sync(lora(tok, use_dora=True)) == 'merge'
    assert choose_sync(lora(tok, modules_to_save=['lm_head'])) == 'merge'
    with pytest.raises(ConfigError, match='aLoRA'): choose_sync(lora(tok, alora_invocation_tokens=[5]))

    assert lora_rank(tiny(tok)) == 0 and lora_rank(lora(tok)) == 8
    assert lora_rank(get_peft_model(tiny(tok), LoraConfig(r=4, target_modules=['q_proj', 'v_proj'], rank_pattern={'v_proj': 20}))) == 32
    with pytest.raises(ConfigError, match='512'): lora_rank(get_peft_model(tiny(tok), LoraConfig(r=600, target_modules=['q_proj'])))

def test_choose_sync_on_a_quantized_base(tok):
    "A 4-bit or GPTQ base cannot take merged weights: plain LoRA syncs the adapter, DoRA is refused (CPU: the quantizer is faked)."
    from types import SimpleNamespace
    def quantized(m, how):
        m.get_base_model().hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method=how)); return m
    for how in ('bitsandbytes', 'gptq'):
        assert E.quant_method(quantized(lora(tok), how)) == how
        assert choose_sync(quantized(lora(tok), how)) == 'adapter'
        with pytest.raises(ConfigError, match='quantized'): choose_sync(quantized(lora(tok, use_dora=True), how))

def test_start_error_names_the_memory_field():
    "vLLM's memory complaint at start-up becomes a ConfigError naming gpu_memory_utilization; other errors pass as they are."
    spec = EngineSpec('m', 'bfloat16', 128, 0.3, True, 0, 8, 0, None, False, {})
    e = E._start_error(ValueError('No available memory for the cache blocks. Try increasing `gpu_memory_utilization`'), spec)
    assert isinstance(e, ConfigError) and 'method.gpu_memory_utilization' in str(e) and '0.3' in str(e)
    e = E._start_error(ValueError('insufficient KV cache for max_model_len'), spec)
    assert isinstance(e, ConfigError)
    other = RuntimeError('something else'); assert E._start_error(other, spec) is other

def test_hf_weights_names(tok):
    plain = [n for n, _ in tiny(tok).named_parameters()]
    assert [n for n, _ in hf_weights(lora(tok))] == plain
    assert [n for n, _ in hf_weights(lora(tok, use_dora=True))] == plain
    assert [n for n, _ in hf_weights(lora(tok, modules_to_save=['lm_head']))] == plain  # the trained copy, under lm_head's name
    pm, q = lora(tok, init_lora_weights=False), 'model.layers.0.self_attn.q_proj.weight'
    base = {n: t.clone() for n, t in hf_weights(pm)}
    with merged(pm): w = {n: t.clone() for n, t in hf_weights(pm)}
    assert not torch.allclose(w[q], base[q]) and torch.allclose(dict(hf_weights(pm))[q], base[q], atol=1e-6)

def test_merge_drifts_in_place_not_by_copy(tok):
    "Why ftnb merges into copies: PEFT's in-place merge/unmerge (TRL's sync) rounds the bf16 base weights every step."
    def drift(dtype, times, by_copy=False):
        torch.manual_seed(0)
        pm = lora(tok, dtype=dtype, init_lora_weights=False)
        w0 = {n: t.clone() for n, t in hf_weights(pm)}
        for _ in range(times):
            if by_copy: list(hf_weights(pm, merge=True))
            else:
                with merged(pm): pass
        return max((t.float() - w0[n].float()).abs().max().item() for n, t in hf_weights(pm))
    d2, d30 = drift(torch.bfloat16, 2), drift(torch.bfloat16, 30)
    d32 = drift(torch.float32, 30)
    print(f'bf16 drift after 2 rounds {d2:.2e}, after 30 {d30:.2e}; fp32 after 30 {d32:.2e}')
    assert d30 > 1e-3 and d30 > d2 and d32 < 1e-5
    assert drift(torch.bfloat16, 30, by_copy=True) == 0

def test_merge_by_copy_equals_peft_merge(tok):
    pm = lora(tok, dtype=torch.bfloat16, init_lora_weights=False)
    copies = {n: t.clone() for n, t in hf_weights(pm, merge=True)}
    with merged(pm): inplace = {n: t.clone() for n, t in hf_weights(pm)}
    for n in copies:  # the same sum, within bf16 rounding (seen: 1 ulp on some elements)
        assert (copies[n].float() - inplace[n].float()).abs().max() <= 2 ** -7 * inplace[n].float().abs().max(), n
    assert any(not torch.equal(copies[n], t) for n, t in hf_weights(pm))  # and the adapter is in it

def test_check_alloc_conf(monkeypatch):
    monkeypatch.setenv('PYTORCH_CUDA_ALLOC_CONF', 'expandable_segments:True')
    with pytest.raises(ConfigError, match='sleep would free nothing') as ei: check_alloc_conf(True)
    assert ei.value.field == 'PYTORCH_CUDA_ALLOC_CONF' and 'sleep_level=0' in ei.value.fix
    check_alloc_conf(False)
    monkeypatch.setenv('PYTORCH_CUDA_ALLOC_CONF', 'expandable_segments:False')
    check_alloc_conf(True)
    monkeypatch.delenv('PYTORCH_CUDA_ALLOC_CONF'); monkeypatch.setenv('PYTORCH_ALLOC_CONF', 'expandable_segments: true')
    with pytest.raises(ConfigError, match='PYTORCH_ALLOC_CONF'): check_alloc_conf(True)

def test_engine_spec(tok, tmp_path):
    tiny(tok, dtype=torch.bfloat16).save_pretrained(tmp_path)
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path), LoraConfig(r=12, target_modules='all-linear'))
    s = engine_spec(pm, max_model_len=256, gpu_memory_utilization=0.2, sleep_level=2)
    assert (s.model, s.dtype, s.max_lora_rank, s.max_model_len, s.enable_sleep_mode) == (str(tmp_path), 'bfloat16', 0, 256, True)
    assert engine_spec(pm, sync='adapter').max_lora_rank == 16  # only the adapter way needs LoRA kernels in vLLM
    assert engine_spec(AutoModelForCausalLM.from_pretrained(tmp_path), sleep_level=0) == EngineSpec(str(tmp_path), 'bfloat16', enable_sleep_mode=False)
    big = EngineSpec('m', max_lora_rank=32, max_num_seqs=64)
    assert big.serves(EngineSpec('m', max_lora_rank=16, max_num_seqs=8)) and not big.serves(EngineSpec('m', max_num_seqs=128))
    assert not big.serves(EngineSpec('m', dtype='bfloat16', max_lora_rank=32, max_num_seqs=64))
    with pytest.raises(ConfigError, match='save_pretrained'): engine_spec(tiny(tok))

# --- the TRL hook ----------------------------------------------------------------------------------------------------

def test_serve_trl_restores_trl(tok):
    import trl.trainer.grpo_trainer as gt
    from trl.generation.vllm_generation import VLLMGeneration
    with pytest.raises(RuntimeError):
        with serve_trl(HFEngine(tiny(tok), tok)):
            assert gt.VLLMGeneration is not VLLMGeneration
            raise RuntimeError('boom')
    assert gt.VLLMGeneration is VLLMGeneration

def test_grpo_two_steps_through_the_hook_on_hf(tok, tmp_path):
    "GRPOTrainer(use_vllm=True, colocate) served by ftnb's HF engine: TRL's loop, its IS correction on our logprobs."
    from trl_steps import two_grpo_steps
    model = lora(tok)
    eng = get_engine(model, engine='hf', tokenizer=tok)
    tr, logs, moved = two_grpo_steps(model, tok, eng, tmp_path, max_completion_length=6)
    assert isinstance(tr.vllm_generation, EngineGeneration) and tr.vllm_generation.engine is eng
    assert len(logs) == 2 and all(h['sampling/sampling_logp_difference/max'] < 1e-3 for h in logs)  # our logprobs are the trainer's
    assert [p['name'] for p in eng.drain_phases()] == ['generate', 'generate']
    assert moved

def test_hf_stop_strings_cut_completions(tok):
    "A stop string ends a completion at the token that completes it (kept), and the padding after it is dropped."
    e = HFEngine(tiny(tok), tok)
    prompts = [tok('12+34=')['input_ids'], tok('7=')['input_ids']]
    full = e.generate(prompts, max_tokens=12, temperature=0)
    c = full[0][0]
    stop = tok.decode(c[3:5])  # text that greedy decoding reaches after 5 tokens
    k = next(i for i in range(1, len(c) + 1) if stop in tok.decode(c[:i]))
    out = e.generate(prompts, max_tokens=12, temperature=0, stop=[stop])
    assert out[0][0] == c[:k] and k < len(c) and stop in tok.decode(out[0][0]) and stop not in tok.decode(out[0][0][:-1])
    c1 = full[1][0]  # the other row: cut at its own first stop string, or left whole
    k1 = next((i for i in range(1, len(c1) + 1) if stop in tok.decode(c1[:i])), len(c1))
    assert out[1][0] == c1[:k1]
    with pytest.raises(ConfigError, match='method.stop'): HFEngine(tiny(tok)).generate(prompts, max_tokens=2, stop=['x'])
