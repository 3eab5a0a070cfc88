"bench/attention.py on a CPU (tiny shape): the padded and packed ways give every sample the same loss, and the gap check can fail."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT/'bench')]

def test_smoke_packed_equals_padded(tmp_path):
    out = tmp_path/'a.json'
    subprocess.run([sys.executable, str(ROOT/'bench/attention.py'), '--smoke', '--ways', 'padded,packed_sdpa', '--out', str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    s = json.loads(out.read_text())['summary']
    assert {(x['batch'], x['way']) for x in s} == {(b, w) for b in ('mixed', 'equal') for w in ('padded', 'packed_sdpa')}
    assert all(x['loss_gap_vs_padded'] < 1e-4 and x['tokens_per_s'] > 0 for x in s), s

def test_the_gap_shows_cross_talk():
    "Negative control: with a KV cache transformers builds no packed-sequence mask, samples see each other, and the gap is large."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    import attention as bench
    from grpo import QWEN, SIZES
    cfg = AutoConfig.for_model('qwen2', **{**QWEN, **SIZES['tiny'], 'vocab_size': 512, 'bos_token_id': 1, 'eos_token_id': 2})
    torch.manual_seed(0); m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation='sdpa')
    ids = bench.samples(64, 'equal', 256, 512)
    with torch.no_grad():
        loss = {w: bench.per_sample_loss(m(**bench.step_inputs(w, ids, 'cpu')[0], use_cache=cache).logits, bench.step_inputs(w, ids, 'cpu')[1], ids, w)
                for w, cache in (('padded', False), ('packed_sdpa', True))}
    assert max(abs(a - b) for a, b in zip(*loss.values())) > 1e-3
