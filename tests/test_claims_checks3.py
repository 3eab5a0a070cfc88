"""Checks for claims of the prose added on 2026-12-03: adapter sync from memory and `sync='shared'` (nbs/09_engine.ipynb),
GRPO through a vLLM server (nbs/09b_server.ipynb), the `grpo.py --shared` section of bench/README.md and the help texts
of `method.sync` and the server fields. docs/claims.md names each one's row. No GPU, no vLLM, no network: the engines are
stand-ins (`__new__` plus the attributes the method reads) and the server a small HTTP server on this machine."""
import json, os, re, signal, socket, statistics, subprocess, sys, tempfile, threading, time, weakref
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import torch
from torch import nn

from ftnb import engine as E
from ftnb import models
from ftnb.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT/'bench'/'results'
BENCH = (ROOT/'bench'/'README.md').read_text()
TINY = str(models.resolve('tiny-qwen2'))

def cell(nb:str, i:int) -> str: return ''.join(json.loads((ROOT/'nbs'/nb).read_text())['cells'][i]['source'])
def flat(s:str) -> str: return ' '.join(s.split())  # prose wraps lines anywhere
def r(v:float, n:int) -> str:
    "`v` to `n` decimals, halves up, as the prose rounds (0.1185 -> 0.119; Python's format would give 0.118)."
    from decimal import ROUND_HALF_UP, Decimal
    return str(Decimal(str(v)).quantize(Decimal(1).scaleb(-n), ROUND_HALF_UP))

def lora(seed=0, **kw):
    "The tiny model with a LoRA on every linear layer, B random (so the adapter changes the outputs)."
    from peft import LoraConfig, get_peft_model
    from ftnb.testing import tiny_model
    pm = get_peft_model(tiny_model(), LoraConfig(r=8, lora_alpha=16, target_modules='all-linear', **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return pm

def quantized(pm, how='bitsandbytes'):
    pm.get_base_model().hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method=how)); return pm

# ------------------------------------------------------------------------------------------------ bench/README.md: --shared
def _shared_section() -> str: return BENCH[BENCH.index('### One copy of the base weights'):BENCH.index('## LoRA SFT at real shapes')]
def _shared_json() -> dict: return json.loads((RES/'grpo_shared_0.5b_h200.json').read_text())
def _runs(d, way) -> list: return [r for r in d['runs'] if r['way'] == way]

def test_shared_bench_rows_are_their_json():
    "B24: each row of the --shared table quotes its JSON's summary: reps, s/step, x TRL, per-rep ratios, device peak."
    s, sec = _shared_json()['summary'][0], _shared_section()
    rows = {r[2]: r for r in ([c.strip(' *') for c in l.strip('|').split('|')] for l in sec.splitlines() if l.startswith('| 0.5B |'))}
    assert set(rows) == {'TRL colocate+sleep', 'ftnb (merge, sleep 2)', 'ftnb shared'}
    want = {'TRL colocate+sleep': (s['trl_s_per_step'], 1.0, '-', s['trl_peak_gib']),
            'ftnb (merge, sleep 2)': (s['ftnb_s_per_step'], s['ratio'], s['pair_ratios'], s['ftnb_peak_gib']),
            'ftnb shared': (s['ftnb_shared_s_per_step'], s['shared_ratio'], s['shared_rep_ratios'], s['ftnb_shared_peak_gib'])}
    for way, (sps, ratio, per, peak) in want.items():
        _, reps, _, t, x, p, g = rows[way]
        assert int(reps) == s['pairs'] == s['shared_reps'] == 3, way
        assert (float(t), float(x), float(g)) == (round(sps, 3), round(ratio, 3 if way != 'TRL colocate+sleep' else 2), round(peak, 2)), way
        assert p == (per if per == '-' else ', '.join(f'{v:.3f}' for v in per)), way
        if per != '-': assert round(statistics.median(per), 3) == round(ratio, 3), way  # "x TRL (median of reps)"
    nb = flat(cell('09_engine.ipynb', 77))  # G38: "What it costs" quotes the same summary
    assert (f"a step took {s['ftnb_shared_s_per_step']:.3f} s shared, {s['ftnb_s_per_step']:.3f} s merge, {s['trl_s_per_step']:.3f} s TRL "
            f"({s['shared_ratio']:.3f}x and {s['ratio']:.3f}x TRL); device peak {s['ftnb_shared_peak_gib']:.2f} GiB shared, "
            f"{s['ftnb_peak_gib']:.2f} merge, {s['trl_peak_gib']:.2f} TRL") in nb

def test_shared_bench_prose_is_its_json():
    "B23, B25, B26: the setup, the rotation, the peaks against TRL and merge, the 5%, the generate and sync medians, what was not run."
    d, sec = _shared_json(), flat(_shared_section())
    m, s = d['meta'], d['summary'][0]
    assert f"torch {m['torch']}" in sec and f"trl {m['trl']}" in sec and f"vllm {m['vllm']}" in sec and m['device'] == 'NVIDIA H200'
    assert f"transformers {m['transformers'].rsplit('.', 1)[0]}" in sec and f"peft {m['peft'].rsplit('.', 1)[0]}" in sec
    sh, mg, trl = (_runs(d, w) for w in ('ftnb_shared', 'ftnb', 'trl'))
    assert {(r['sync'], r['sleep_level']) for r in sh} == {('shared', 1)} and {r['sleep_level'] for r in mg} == {2}
    order = {p: [r['way'] for r in sorted((r for r in d['runs'] if r['pair'] == p), key=lambda r: r['order'])] for p in range(3)}
    assert order == {0: ['ftnb', 'trl', 'ftnb_shared'], 1: ['trl', 'ftnb_shared', 'ftnb'], 2: ['ftnb_shared', 'ftnb', 'trl']}
    assert {r['device_call'] for r in d['runs']} == {0, 1, 2} and all(len({r['device_call'] for r in d['runs'] if r['pair'] == p}) == 1 for p in range(3))
    assert f"-{s['trl_peak_gib'] - s['ftnb_shared_peak_gib']:.2f} GiB" in sec and f"-{s['ftnb_peak_gib'] - s['ftnb_shared_peak_gib']:.2f} against ftnb's merge way" in sec
    assert f"{round(100 * (s['ftnb_shared_s_per_step'] / s['ftnb_s_per_step'] - 1))}% slower than the merge way" in sec
    med = lambda rs, k: statistics.median(r['split'][k] for r in rs)
    assert f"generate {med(sh, 'generate'):.2f} vs {med(mg, 'generate'):.2f} s median" in sec
    assert f"sync ({med(sh, 'sync'):.3f} vs {med(mg, 'sync'):.3f} s)" in sec
    assert med(sh, 'generate') > med(mg, 'generate') and med(sh, 'sync') < med(mg, 'sync')
    assert f"({s['ratio']:.3f}x, {s['shared_ratio']:.3f}x)" in sec and s['ratio'] > 0.6 and s['shared_ratio'] > 0.6  # "the 0.6x goal is still not met"
    assert {r['size'] for r in d['runs']} == {'0.5b'} and not d['not_made'] and '1.5b and 3b were not run' in d['calls_note']

def _gpu_log() -> dict:
    "The SHARED-GPU lines of the GPU tests' log, and each call's pytest summary line."
    log = (RES/'gpu_tests_issue9_shared_h200.log').read_text()
    out = {k: json.loads(v) for k, v in re.findall(r'^SHARED-GPU (\w+): (\{.*\})$', log, re.M)}
    out['summaries'] = re.findall(r'^(\d+ (?:failed|passed).*) in [\d.]+s', log, re.M)
    out['log'] = log
    return out

def test_shared_gpu_log_says_what_the_docs_say():
    "B27, G34-G36: the numbers the bench README and nb 09 quote from gpu_tests_issue9_shared_h200.log, and what passed."
    g, sec, nb = _gpu_log(), flat(_shared_section()), flat(cell('09_engine.ipynb', 77))
    assert g['summaries'] == ['1 failed, 1 passed, 15 warnings', '1 passed, 15 warnings']
    assert "vLLM's sleep mode serves one engine per process" in g['log']  # call A's one failure: the GRPO test in the same process
    sh, st, t, grpo = g['share'], g['sleep_train_wake'], g['timings'], g['grpo']
    for text in (sec, nb):
        assert f"{r(sh['freed_gib'], 2)} GiB" in text and f"{r(sh['base_gib'], 2)} GiB" in text
        assert f"{r(st['freed_by_sleep_gib'], 2)} GiB" in text and f"{r(st['asleep_gib'], 2)} GiB" in text
        assert f"sleep {r(t['sleep_s'], 3)} s, wake {r(t['wake_s'], 3)} s" in text
        assert f"{r(t['sync_shared_ms'], 0)} ms" in text and f"{r(t['logp_gap_mean'], 4)}" in text
        assert f"{r(min(grpo['logp_diff']), 4)}-{r(max(grpo['logp_diff']), 4)}" in text
    assert sh['freed_gib'] >= sh['base_gib'] * 0.99 and st['changed_by_training'] and st['engine_changed']
    assert st['vs_adapter_files'] == [32] * 4 and 'all 32 tokens of every prompt' in sec  # after training: agree with vLLM's file loader
    assert (grpo['status'], grpo['step']) == ('finished', 4) and 'sync:shared' in grpo['details'] and '4 steps' in sec
    assert t['sync_shared_ms'] > 20  # "the aim was under 20 ms at 1.5B: not met" (already over it at 0.5B)

# ------------------------------------------------------------------------------------------------ 09_engine: sync='shared'
def test_shared_is_chosen_by_name_only():
    "G30, C20: 'auto' never picks 'shared': merge for plain LoRA, adapter on a quantized base, full without an adapter."
    from ftnb.testing import tiny_model
    assert E.choose_sync(lora()) == 'merge' and E.choose_sync(quantized(lora())) == 'adapter' and E.choose_sync(tiny_model()) == 'full'
    assert E.choose_sync(quantized(lora(), 'gptq')) == 'adapter'

def _vllm_standin(on_cpu=False, rank=8, **kw):
    "A VLLMEngine without vLLM: the attributes its checks and its sleep read."
    e = E.VLLMEngine.__new__(E.VLLMEngine); E.Engine.__init__(e)
    e.on_cpu, e.spec = on_cpu, E.EngineSpec('m', max_lora_rank=rank, **kw)
    e.can_sleep, e.sleep_level, e.asleep, e._weights_up, e._stale, e._shared = True, 2, 0, True, False, []
    return e

def test_shared_needs_cuda_and_an_unquantized_plain_lora(monkeypatch):
    "G30, G39: 'shared' is refused on a CPU, on a quantized base, for DoRA and modules_to_save, and for a model without an adapter."
    from ftnb.testing import tiny_model
    with pytest.raises(ConfigError, match='needs a CUDA GPU'): _vllm_standin(on_cpu=True)._check_how(lora(), 'shared')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # a GPU machine, as far as the checks can tell
    e = _vllm_standin()
    e._check_how(lora(), 'shared')  # plain LoRA on a float base: allowed
    with pytest.raises(ConfigError, match='quantized base'): e._check_how(quantized(lora()), 'shared')
    with pytest.raises(ConfigError, match='DoRA or modules_to_save'): e._check_how(lora(use_dora=True), 'shared')
    with pytest.raises(ConfigError, match='DoRA or modules_to_save'): e._check_how(lora(modules_to_save=['lm_head']), 'shared')
    with pytest.raises(ConfigError, match='no PEFT adapter'): e._check_how(tiny_model(), 'shared')
    with pytest.raises(ConfigError, match='up to 4'): _vllm_standin(rank=4)._check_how(lora(), 'shared')
    e._check_how(quantized(lora()), 'adapter')  # the way that serves a quantized base

class _LLM:
    "Records vLLM's sleep and wake calls."
    def __init__(self): self.calls = []
    def sleep(self, level): self.calls.append(('sleep', level))
    def wake_up(self, tags=None): self.calls.append(('wake_up', tags))

def test_a_shared_base_is_never_dropped_by_sleep():
    "G35, c55: with a shared base a level-2 sleep becomes level 1 (the backend then frees the KV cache only); without, level 2 stays."
    for shared, want in ((True, 1), (False, 2)):
        e = _vllm_standin(); e.llm = _LLM()
        if shared: e._shared = [(lambda: None, {})]
        e.sleep(2)
        assert e.llm.calls == [('sleep', want)] and e.asleep == want and e._stale == (want == 2), shared
        assert [p['name'] for p in e.phases] == [f'sleep:{want}']

def test_unshare_gives_the_model_its_own_copy():
    "G38: before anything else is written into vLLM's weights the sharing model gets its own copy: same values, other memory, ties kept."
    pm, ids = lora(), torch.tensor([[5, 9, 12, 7]])
    with torch.no_grad(): before = pm(ids).logits
    frozen = {n: p for n, p in pm.named_parameters() if not p.requires_grad and 'lora_' not in n}
    vllm = {n: p.detach().clone() for n, p in frozen.items()}  # stand-in for vLLM's tensors
    new = {id(p): nn.Parameter(vllm[n], requires_grad=False) for n, p in frozen.items()}
    E._swap_params(pm, new)
    base = pm.get_base_model()
    tied = base.lm_head.weight is base.model.embed_tokens.weight
    assert all(pm.get_parameter(n).data_ptr() == vllm[n].data_ptr() for n in frozen)  # shared
    e = _vllm_standin(); e.llm = None
    e._shared = [(weakref.ref(pm), {id(p): p for p in new.values()})]
    e._unshare()
    assert e._shared == [] and all(pm.get_parameter(n).data_ptr() != vllm[n].data_ptr() for n in frozen)
    for t in vllm.values(): t.zero_()  # vLLM writes new weights: the model no longer sees them
    with torch.no_grad(): assert torch.equal(pm(ids).logits, before)
    assert (base.lm_head.weight is base.model.embed_tokens.weight) == tied

# ------------------------------------------------------------------------------------------------ 09b_server
class _Recorder:
    "An HTTP server that records POST bodies and answers them with `status`."
    def __init__(self, status=200):
        posts, self.status = [], status
        outer = self
        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                posts.append((self.path, body))
                self.send_response(outer.status); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'{}')
            def log_message(self, *a): pass
        self.posts, self.srv = posts, HTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.srv.server_address[1]}'
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
    def __enter__(self): return self
    def __exit__(self, *a): self.srv.shutdown(); self.srv.server_close()

def _server_standin(url, client=None, same_gpu=True):
    from ftnb import server as S
    e = S.ServerEngine.__new__(S.ServerEngine); E.Engine.__init__(e)
    e.url, e.same_gpu, e.base, e._version, e._nccl = url, same_gpu, TINY, 0, False
    e.client = client or SimpleNamespace(session=requests.Session(), model=TINY)
    e._lora_dir = Path(tempfile.mkdtemp(prefix='ftnb-lora-test-', dir=E._tmpfs()))
    return e

def test_server_adapter_sync_loads_a_new_name_and_unloads_the_old():
    "SV3: each sync saves only the adapter to RAM, loads it under a new name, unloads the previous one; generation then names it."
    pm = lora()
    with _Recorder() as srv:
        e = _server_standin(srv.url)
        assert [e.sync(pm), e.sync(pm)] == ['adapter', 'adapter']
        (p1, b1), (p2, b2), (p3, b3) = srv.posts
        assert (p1, b1['lora_name'], p2, b2['lora_name'], p3, b3) == ('/v1/load_lora_adapter', 'ftnb-v1', '/v1/load_lora_adapter', 'ftnb-v2',
                                                                      '/v1/unload_lora_adapter', {'lora_name': 'ftnb-v1'})
        assert e.client.model == 'ftnb-v2' and not Path(b1['lora_path']).exists()  # the old folder is gone
        d = Path(b2['lora_path'])
        assert sorted(f.name for f in d.iterdir()) == ['README.md', 'adapter_config.json', 'adapter_model.safetensors'] or \
               sorted(f.name for f in d.iterdir()) == ['adapter_config.json', 'adapter_model.safetensors']  # only the adapter
        if E._tmpfs(): assert str(d).startswith('/dev/shm/')  # in RAM
        from safetensors.torch import load_file
        assert all('lora_' in k for k in load_file(d/'adapter_model.safetensors'))  # no base weight travels
        assert [p['name'] for p in e.drain_phases()] == ['sync:adapter', 'sync:adapter']
        e.shutdown()
        assert srv.posts[-1] == ('/v1/unload_lora_adapter', {'lora_name': 'ftnb-v2'}) and not e._lora_dir.exists() and e.client is None
    with _Recorder(404) as srv:
        with pytest.raises(ConfigError, match='no runtime LoRA loading') as x: _server_standin(srv.url).sync(pm)
        assert x.value.field == 'method.engine' and 'ftnb serve CONFIG.yaml' in x.value.fix

class _Client:
    "Records what ServerEngine asks of TRL's VLLMClient on the whole-weight path."
    def __init__(self): self.calls, self.model = [], TINY
    def init_communicator(self, device): self.calls.append(('init', device))
    def update_named_params(self, meta, named): self.calls.append(('update', meta, [(n, t.clone()) for n, t in named]))
    def reset_prefix_cache(self): self.calls.append(('reset',))
    def close_communicator(self): self.calls.append(('close',))

def test_server_whole_weights_are_merged_copies_sent_through_trls_client(monkeypatch):
    "SV4: whole weights = the adapter merged into copies (PEFT's merge is the oracle), over TRL's client; then the prefix cache is reset; the trainer's weights untouched."
    import copy
    pm = lora(modules_to_save=['lm_head'])  # cannot travel as an adapter
    want = copy.deepcopy(pm).merge_and_unload().state_dict()
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    c = _Client()
    e = _server_standin('http://127.0.0.1:1', client=c, same_gpu=False)
    assert e.sync(pm) == 'merge' and e.sync(pm) == 'merge'
    assert [x[0] for x in c.calls] == ['init', 'update', 'reset', 'update', 'reset']  # the NCCL group joined once
    _, meta, sent = c.calls[1]
    assert [m[0] for m in meta] == [n for n, _ in sent] == [n for n, _ in E.hf_weights(pm)]  # announced, then streamed in that order
    assert all((list(t.shape), str(t.dtype).removeprefix('torch.')) == (m[2], m[1]) for m, (_, t) in zip(meta, sent))
    for n, t in sent: assert torch.allclose(t, want[n], atol=1e-6), n
    assert any(not torch.equal(t, before['base_model.model.' + n.replace('.weight', '.base_layer.weight')])
               for n, t in sent if 'q_proj' in n)  # the merge changed what was sent ...
    assert all(torch.equal(p, before[n]) for n, p in pm.named_parameters())  # ... and not the trainer's weights
    e.shutdown(); assert c.calls[-1] == ('close',)
    with pytest.raises(ConfigError, match='two ranks on one GPU'): _server_standin('http://127.0.0.1:1', client=_Client())._choose(pm, 'auto')

def test_server_sleep_and_wake_do_nothing():
    "SV14: the server keeps its memory share: sleep and wake send nothing and record no phase."
    class Boom:
        def __getattr__(self, k): raise AssertionError(f'sleep/wake used the client: {k}')
    e = _server_standin('http://127.0.0.1:1', client=Boom())
    e.sleep(); e.sleep(2); e.wake()
    assert e.phases == []

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_wait_server_says_why_the_server_exited(tmp_path):
    "SV11: a server that exits before it answers: a ConfigError with its status and the end of its log."
    from ftnb import server as S
    log = tmp_path/'server.log'
    with open(log, 'w') as f:
        proc = subprocess.Popen([sys.executable, '-c', 'print("no such model: xyz-123"); raise SystemExit(3)'], stdout=f, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{_free_port()}'
    with pytest.raises(ConfigError) as x: S.wait_server(url, proc, 60, log)
    assert x.value.field == 'method.server_url' and 'exited with status 3' in x.value.problem and 'no such model: xyz-123' in x.value.problem

def _gone(pid:int) -> bool:
    try: return Path(f'/proc/{pid}/status').read_text().split('State:')[1].split()[0] in ('Z', 'X')
    except (FileNotFoundError, IndexError): return True

def test_stop_server_ends_its_children(tmp_path):
    "SV11: stop_server ends the server's whole process group (vLLM's engine core is a child process)."
    from ftnb import server as S
    pidf = tmp_path/'child'
    proc = subprocess.Popen(['sh', '-c', f'sleep 300 & echo $! > {pidf}; wait'], start_new_session=True)
    t0 = time.time()
    while not (pidf.exists() and pidf.read_text().strip()) and time.time() - t0 < 20: time.sleep(0.05)
    child = int(pidf.read_text())
    assert not _gone(child)
    S.stop_server(proc, grace=10)
    t0 = time.time()
    while not _gone(child) and time.time() - t0 < 10: time.sleep(0.05)
    assert proc.poll() is not None and _gone(child)

def test_ftnb_serve_waits_server_timeout_then_stops_the_server(monkeypatch):
    "C21, SV12: `ftnb serve` waits method.server_timeout for its server, then stops with a ConfigError naming it, and ends the server."
    from ftnb import server as S
    started = []
    def start(cfg, log=None):
        started.append(subprocess.Popen(['sleep', '300'], start_new_session=True)); return started[-1]
    monkeypatch.setattr(S, 'start_server', start)
    cfg = RunConfig(method={'name': 'grpo', 'engine': 'server', 'server_url': f'http://127.0.0.1:{_free_port()}', 'server_timeout': 1.5})
    old = signal.getsignal(signal.SIGTERM)
    try:
        t0 = time.time()
        with pytest.raises(ConfigError) as x: S.serve(cfg)
        assert x.value.field == 'method.server_timeout' and x.value.value == 1.5 and 1.4 < time.time() - t0 < 30
        assert started[0].poll() is not None  # the server it started is stopped
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in started:
            if p.poll() is None: p.kill()

def test_server_gpu_test_not_run_yet():
    "SV15: the notebook says that nothing of the server path has run on a GPU; this fails once a GPU result of it is kept here."
    assert (ROOT/'tests'/'gpu'/'test_server_gpu.py').exists()
    assert not [p.name for p in RES.iterdir() if 'server' in p.name], 'a GPU result of the server is kept: update nbs/09b_server.ipynb and docs/claims.md SV15'
    assert 'written, not yet run on a GPU' in flat(cell('09b_server.ipynb', 2))
