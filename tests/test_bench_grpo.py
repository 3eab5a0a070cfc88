"bench/grpo.py's CPU-checkable parts: the local tokenizer has Qwen2.5's 151,936 entries and every id decodes; prompts are exactly 128 tokens; the summary pairs runs as documented."
import json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'bench'))
import grpo as bench

def test_tokenizer_has_qwen_vocab_and_every_id_decodes():
    tok = bench.tokenizer()
    assert len(tok) == bench.VOCAB == 151_936 and tok.eos_token_id == 151_643 == tok.pad_token_id
    assert tok.convert_ids_to_tokens(151_645) == '<|im_end|>'
    ids = list(range(0, bench.VOCAB, 97)) + list(range(bench.VOCAB - 300, bench.VOCAB))
    assert all(isinstance(tok.decode([i]), str) for i in ids)  # no id is unknown to the decoder
    assert tok.decode(tok('hello world')['input_ids']) == 'hello world'

def test_prompts_are_128_tokens(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, 'WORK', tmp_path)
    tok = bench.tokenizer()
    rows = [json.loads(l) for l in bench.prompts_file(8).read_text().splitlines()]
    assert len(rows) == 8 and {len(tok(r['prompt'])['input_ids']) for r in rows} == {bench.PROMPT_TOKENS}

def test_summary_medians_over_pairs():
    run = lambda way, pair, s, peak: dict(size='0.5b', way=way, pair=pair, sec_per_step=s, smi_peak_gib=peak)
    runs = [run('ftnb', 0, 1.0, 40), run('trl', 0, 2.0, 41), run('trl', 1, 1.5, 42), run('ftnb', 1, 1.2, 43),
            run('ftnb', 2, 1.1, 44), dict(size='0.5b', way='trl', pair=2, error='died')]  # an unfinished pair does not count
    (s,) = bench.summarize(runs)
    assert (s['pairs'], s['ftnb_s_per_step'], s['trl_s_per_step'], s['pair_ratios']) == (2, 1.1, 1.75, [0.5, 0.8])
    assert abs(s['ratio'] - 0.65) < 1e-9 and s['ftnb_peak_gib'] == 41.5 and s['ftnb_min_gib'] is None

def test_fit_runs_give_min_gib_and_do_not_count_as_pairs():
    run = lambda way, pair, s, peak, fit=False: dict(size='1.5b', way=way, pair=pair, sec_per_step=s, smi_peak_gib=peak, fit=fit)
    runs = [run('ftnb', 0, 1.0, 40), run('trl', 0, 2.0, 41),
            run('ftnb', 0, 1.1, 12.0, True), run('trl', 0, 2.1, 14.0, True), run('ftnb_shared', 0, 1.2, 10.5, True)]
    (s,) = bench.summarize(runs)
    assert (s['pairs'], s['ftnb_s_per_step'], s['ftnb_peak_gib']) == (1, 1.0, 40)  # the fit runs are not pairs
    assert (s['ftnb_min_gib'], s['trl_min_gib'], s['ftnb_shared_fit_gib'], s['ftnb_fit_gib']) == (10.5, 14.0, 10.5, 12.0)

def test_kv_bytes_is_one_steps_need():
    # 1.5B: 28 layers x K and V x 2 KV heads x 128 dims x 2 bytes = 28,672 bytes a token; 32 x 512 tokens, x1.25
    assert bench.kv_bytes('1.5b') == int(1.25 * 32 * 512 * 28 * 2 * 2 * 128 * 2)
