"bench/sft.py's plumbing on a CPU: the length distributions, the data file's token counts, the interleaved order, the JSON and its summary, and a real --smoke run of three ways (one with accel.fused_lora)."
import json, os, statistics, subprocess, sys
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))
import sft as bench

def test_lengths_mixed_is_skewed_and_clipped_equal_is_full():
    mixed = bench.lengths(1024, 2000, 'mixed')
    assert min(mixed) >= 32 and max(mixed) == 1024 and 200 < statistics.median(mixed) < 320  # median seq/4 = 256
    assert statistics.mean(mixed) > statistics.median(mixed)  # right-skewed: a few long samples
    assert bench.lengths(4096, 5, 'equal') == [4096]*5 and bench.lengths(1024, 50, 'mixed') == mixed[:50]  # seeded

def test_data_file_samples_have_the_planned_token_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, 'WORK', tmp_path)
    tok = bench.small_tokenizer()
    rows = [json.loads(l) for l in bench.data_file(256, 'mixed', 40).read_text().splitlines()]
    got = [len(tok(r['prompt'] + r['completion'])['input_ids']) + 1 for r in rows]  # + the end token both libraries append
    assert got == bench.lengths(256, 40, 'mixed') and len(tok) == bench.SMOKE_VOCAB
    assert bench.plan(1024, 'equal', 8192, False, 20) == (8, 176) and bench.plan(4096, 'equal', 8192, True, 20)[0] == 2
    assert bench.plan(1024, 'mixed', 8192, True, 20)[0] == 3  # packed rows carry about the tokens of 8 mixed samples

def fake_child(rates):
    "A stand-in for the child processes: each way's tokens/s per rep from `rates`."
    calls = []
    def child(cmd, timeout):
        if '--build' in cmd: return {'path': '/x'}, ''
        size, seq, batch, way = cmd[cmd.index('--one') + 1].split(':')
        rep = sum(1 for c in calls if c[3] == way); calls.append((size, seq, batch, way))
        return dict(size=size, seq=int(seq), batch=batch, way=way, vocab_size=bench.VOCAB, batch_size=8, gradient_checkpointing=False,
                    tokens_per_s=rates[way][rep], peak_gib=10.0 + rep), ''
    return child, calls

def test_main_interleaves_rotates_and_summarises(tmp_path, monkeypatch):
    rates = {'trl': [100, 110, 90], 'trl_liger_pf': [150, 160, 140], 'ftnb_best': [200, 165, 180]}
    child, calls = fake_child(rates)
    monkeypatch.setattr(bench, 'child', child)
    out = tmp_path/'sft.json'
    bench.main(['--sizes', '1.5b', '--seqs', '1024', '--batches', 'mixed', '--ways', 'trl,trl_liger_pf,ftnb_best', '--out', str(out)])
    assert [c[3] for c in calls] == ['trl', 'trl_liger_pf', 'ftnb_best', 'trl_liger_pf', 'ftnb_best', 'trl', 'ftnb_best', 'trl', 'trl_liger_pf']
    d = json.loads(out.read_text())
    assert {'date', 'device', 'versions', 'setup'} <= d['meta'].keys() and d['meta']['setup']['mixed_lengths'] == bench.MIXED
    s = {e['way']: e for e in d['summary']}
    need = {'size', 'seq', 'vocab_size', 'batch', 'way', 'tokens_per_s', 'peak_gib', 'ratio_vs_trl', 'ratio_vs_trl_best'}
    assert all(need <= e.keys() for e in d['summary']) and s['ftnb_best']['vocab_size'] == 151_936
    assert (s['ftnb_best']['tokens_per_s'], s['ftnb_best']['peak_gib'], s['trl']['ratio_vs_trl']) == (180, 11.0, 1.0)
    assert s['ftnb_best']['ratio_vs_trl'] == 2.0 and s['ftnb_best']['trl_best'] == 'trl_liger_pf'  # per rep: 2.0, 1.5, 2.0
    assert abs(s['ftnb_best']['ratio_vs_trl_best'] - 180/140) < 1e-9  # per rep: 1.333, 1.031, 1.286
    assert [r['order'] for r in d['runs'][:3]] == [0, 1, 2] and d['not_made'] == []

def test_budget_leaves_runs_not_made(tmp_path, monkeypatch):
    child, calls = fake_child({'trl': [1]*3, 'ftnb': [1]*3})
    monkeypatch.setattr(bench, 'child', child)
    d = bench.main(['--sizes', '0.5b', '--seqs', '1024', '--batches', 'equal', '--ways', 'trl,ftnb', '--budget', '-1', '--out', str(tmp_path/'s.json')])
    assert calls == [] and len(d['not_made']) == 6 and d['summary'] == []

@pytest.mark.trains
def test_smoke_runs_three_ways_on_the_same_batches(tmp_path):
    env = {**os.environ, 'FTNB_BENCH_DIR': str(tmp_path), 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    out = tmp_path/'smoke.json'
    p = subprocess.run([sys.executable, str(ROOT/'bench'/'sft.py'), '--smoke', '--batches', 'mixed', '--ways', 'trl,ftnb_pf,ftnb_fused', '--out', str(out)],
                       env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads(out.read_text())
    runs = {r['way']: r for r in d['runs']}
    assert all('error' not in r for r in runs.values()), [r.get('error') for r in runs.values()]
    trl, ftnb = runs['trl'], runs['ftnb_pf']
    assert trl['steps'] == ftnb['steps'] == 2 and trl['batch_size'] == ftnb['batch_size'] == 4
    assert trl['tokens'] == ftnb['tokens'] and trl['trained_tokens'] == ftnb['trained_tokens']  # the same samples, in the same order
    assert trl['pad_fraction'] > 0 and ftnb['pad_fraction'] == 0 and ftnb['padding_free'] and not trl['padding_free']
    fz = runs['ftnb_fused']  # accel.fused_lora: the same samples, the fused LoRA ops
    assert fz['fused_lora'] and not ftnb['fused_lora'] and fz['steps'] == 2 and fz['trained_tokens'] == trl['trained_tokens']
    assert {e['way'] for e in d['summary']} == {'trl', 'ftnb_pf', 'ftnb_fused'} and all(e['tokens_per_s'] > 0 and e['vocab_size'] == 512 for e in d['summary'])
