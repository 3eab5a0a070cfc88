"""ftnb.lora_ops on the CPU: each fused op against the torch reference on odd shapes (outputs and gradients of x, A, B;
fp32 tight, bf16 looser), the SwiGLU Triton kernels run by Triton's interpreter, the 4-bit branch with a stand-in
dequantizer, `apply_fused_lora` on the tiny Qwen2 and Llama models (loss and every LoRA gradient equal PEFT's, with a
negative control), its refusals, the config wiring through `ftnb.train`, and bench/lora_ops.py --smoke.
The CUDA path (Triton kernels in bf16, a training run) is tests/gpu/test_lora_ops_gpu.py."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from ftnb import lora_ops as L
from ftnb.config import ConfigError, RunConfig
from ftnb.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]
N, T, H, I, R = 3, 37, 72, 200, 5  # odd shapes: batch 3 x 37 tokens, hidden 72, intermediate 200, rank 5
KV = 24                             # k/v out: 2 kv heads x 12
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # relative error (norm of the difference / norm of the reference)


def rel(a, b) -> float: return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()

def close(a, b, dt):
    "fp32: elementwise within 1e-5 of the tensor's largest value, and relative norm 1e-5; bf16: relative norm within 2e-2."
    if dt == torch.float32: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    assert rel(a, b) < TOL[dt], (rel(a, b), dt)

def proj(out, inp, bias, g):
    "(W, b, A, B) of one projection, scaled so outputs are O(1); A, B require grad."
    W = torch.randn(out, inp, generator=g) / inp**.5
    b = torch.randn(out, generator=g) if bias else None
    return W, b, (torch.randn(R, inp, generator=g) / inp**.5), (torch.randn(out, R, generator=g) / R**.5)

def leaves(ts, dt):
    "Copies of ts in dtype dt, the x/A/B ones (index 0 mod 4 >= 2, or x) requiring grad."
    return [None if t is None else t.to(dt).requires_grad_(i % 4 >= 2) for i, t in enumerate(ts)]

def grads_of(out, inputs):
    outs = out if isinstance(out, tuple) else (out,)
    gy = [torch.randn(o.shape, generator=torch.Generator().manual_seed(7)).to(o.dtype) for o in outs]
    return torch.autograd.grad(outs, inputs, gy)

def mlp_ref(x, ss, *p):
    pg, pu, pd = p[0:4], p[4:8], p[8:12]
    return L.lora_linear_ref(L.swiglu_ref(L.lora_linear_ref(x, *pg, ss[0]), L.lora_linear_ref(x, *pu, ss[1])), *pd, ss[2])

def qkv_ref(x, ss, *p): return tuple(L.lora_linear_ref(x, *p[4*i:4*i + 4], s) for i, s in enumerate(ss))

CASES = {  # op: (Function, reference, scalings, [(out, in, bias)] per projection)
    'linear': (L.LoRALinearFn, lambda x, s, W, b, A, B: L.lora_linear_ref(x, W, b, A, B, s), 1.6, [(H, H, False)]),
    'qkv': (L.LoRAQKVFn, qkv_ref, (1.6, 0.5, 2.0), [(H, H, True), (KV, H, True), (KV, H, True)]),
    'mlp': (L.LoRAMLPFn, mlp_ref, (1.6, 0.5, 2.0), [(I, H, False), (I, H, False), (H, I, False)])}

def run_case(name, dt, s_wrong=None):
    "The fused op and the reference on the same inputs: (outputs and gradients of x and every A, B) for each."
    fn, ref, ss, shapes = CASES[name]
    g = torch.Generator().manual_seed(0)
    x0, p0 = torch.randn(N, T, H, generator=g), [t for o, i, b in shapes for t in proj(o, i, b, g)]
    res = []
    for f, s in ((lambda x, s, *p: L.fused(fn, x, s, *p), s_wrong or ss), (ref, ss)):
        x, p = x0.to(dt).requires_grad_(), leaves(p0, dt)
        if f is ref and dt == torch.bfloat16: x, p = x.float().detach().requires_grad_(), leaves(p0, torch.float32)  # bf16: against fp32
        out = f(x, s, *p)
        ins = [x] + [t for t in p if t is not None and t.requires_grad]
        res.append(((out if isinstance(out, tuple) else (out,)), grads_of(out, ins)))
    return res

@pytest.mark.parametrize('dt', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('name', list(CASES))
def test_op_matches_reference(name, dt):
    (yf, gf), (yr, gr) = run_case(name, dt)
    assert yf[0].dtype == dt and len(gf) == len(gr) == 1 + 2 * len(CASES[name][3])
    for a, b in zip(yf + gf, yr + gr): close(a.to(b.dtype), b, dt)

@pytest.mark.parametrize('name', list(CASES))
def test_negative_control_wrong_scaling_fails(name):
    "The same comparison with a scaling 1% off must fail: the test above can fail."
    ss = CASES[name][2]
    wrong = ss * 1.01 if isinstance(ss, float) else tuple(s * 1.01 for s in ss)
    (yf, gf), (yr, gr) = run_case(name, torch.float32, s_wrong=wrong)
    with pytest.raises(AssertionError): close(yf[0], yr[0], torch.float32)
    with pytest.raises(AssertionError): close(gf[1], gr[1], torch.float32)  # dA


def test_swiglu_triton_kernels_interpreted():
    "The Triton kernels, run on the CPU by TRITON_INTERPRET=1, equal the torch reference in fp32 and bf16 (odd size)."
    pytest.importorskip('triton')
    code = """
import torch
from ftnb import lora_ops as L
assert L.triton is not None
g = torch.Generator().manual_seed(0)
for dt, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)):  # bf16: one rounding step (2^-7)
    e, gg, dh = (torch.randn(3 * 37, 200, generator=g).to(dt) for _ in range(3))
    h = L.swiglu_triton(e, gg); torch.testing.assert_close(h, L.swiglu_ref(e, gg), rtol=tol, atol=tol)
    for a, b in zip(L.swiglu_bwd_triton(dh, e, gg), L.swiglu_bwd_ref(dh, e, gg)): torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    dh2 = dh.clone(); h2, de2, dg2 = L.swiglu_bwd_triton(dh2, e, gg, h_into_dh=True)
    assert h2.data_ptr() == dh2.data_ptr() and torch.equal(h2, L.swiglu_bwd_triton(dh, e, gg)[0]) and torch.equal(de2, L.swiglu_bwd_triton(dh, e, gg)[1])
    bad = L.swiglu_triton(e, gg * 1.01)
    assert not torch.allclose(bad.float(), h.float(), rtol=1e-4, atol=1e-4)  # the comparison can fail
L._triton_on = lambda t: True  # LoRAMLPFn with the Triton kernels (h written into dh's buffer), as on CUDA
x = torch.randn(3, 37, 72, generator=g, requires_grad=True)
AB = [t.requires_grad_() for i, o in ((72, 200), (72, 200), (200, 72)) for t in (torch.randn(5, i, generator=g) / i**.5, torch.randn(o, 5, generator=g) / 5**.5)]
p = [t for j, (o, i) in enumerate(((200, 72), (200, 72), (72, 200))) for t in (torch.randn(o, i, generator=g) / i**.5, None, AB[2*j], AB[2*j + 1])]
y = L.fused(L.LoRAMLPFn, x, (1.6, 0.5, 2.0), *p); got = torch.autograd.grad(y.sum(), [x, *AB])
pg, pu, pd = p[0:4], p[4:8], p[8:12]
yr = L.lora_linear_ref(L.swiglu_ref(L.lora_linear_ref(x, *pg, 1.6), L.lora_linear_ref(x, *pu, 0.5)), *pd, 2.0)
for a, b in zip((y, *got), (yr, *torch.autograd.grad(yr.sum(), [x, *AB]))): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
print('OK')
"""
    env = {**os.environ, 'TRITON_INTERPRET': '1', 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and 'OK' in r.stdout, r.stderr[-3000:]


def test_4bit_weight_dequantized_per_use_and_never_saved(monkeypatch):
    "A weight with `quant_state` (bitsandbytes' Params4bit; here a stand-in) is dequantized in forward and in backward; no dense copy is saved."
    calls = []
    def deq(t): calls.append(1); return t.float() * t.quant_state
    monkeypatch.setattr(L, 'DEQUANT', [deq])
    g = torch.Generator().manual_seed(0)
    W, b, A, B = proj(H, H, True, g)
    q = (W / 0.01).round().to(torch.int8); q.quant_state = 0.01
    x, A, B = torch.randn(N, T, H, generator=g).requires_grad_(), A.requires_grad_(), B.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = L.fused(L.LoRALinearFn, x, 1.6, q, b, A, B)
    assert (H, H) not in saved and calls == [1]
    gx, gA, gB = torch.autograd.grad(y, (x, A, B), torch.ones_like(y))
    assert calls == [1, 1]
    xr, Ar, Br = (t.detach().requires_grad_() for t in (x, A, B))
    yr = L.lora_linear_ref(xr, q.float() * 0.01, b, Ar, Br, 1.6)
    close(y, yr, torch.float32)
    for a, r in zip((gx, gA, gB), torch.autograd.grad(yr, (xr, Ar, Br), torch.ones_like(yr))): close(a, r, torch.float32)


def saved_by(f, *args) -> list:
    "Shapes of the tensors autograd saves for backward while `f(*args)` runs (parameters included)."
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t): f(*args)
    return shapes

def test_fused_mlp_saves_x_gate_up_and_small_tensors_only():
    "LoRAMLPFn keeps x, gate(x), up(x), the three x A^T (N x r) and A, B; not h, not silu(gate); PEFT's modules under autograd keep more."
    from peft import LoraConfig, inject_adapter_in_model
    from torch import nn
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False), nn.Linear(I, H, bias=False)
        def forward(self, x): return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # Qwen2MLP.forward
    torch.manual_seed(0)
    m = inject_adapter_in_model(LoraConfig(r=R, lora_alpha=8, lora_dropout=0.0, target_modules=['gate_proj', 'up_proj', 'down_proj']), MLP())
    for n_, p in m.named_parameters(): p.requires_grad_('lora_' in n_)
    x = torch.randn(N, T, H, requires_grad=True)
    fused = saved_by(lambda x: L.fused(L.LoRAMLPFn, x, *L._parts((m.gate_proj, m.up_proj, m.down_proj))), x)
    big = sorted(s for s in fused if len(s) == 2 and s[0] == N * T)
    assert big == sorted([(N * T, H), (N * T, I), (N * T, I), (N * T, R), (N * T, R), (N * T, R)]), fused  # x, e, g, three x A^T
    assert sorted(s for s in fused if s not in big) == sorted([(R, H), (I, R), (R, H), (I, R), (R, I), (H, R)])  # the A and B weights
    n_elems = lambda ss: sum(torch.Size(s).numel() for s in ss)
    peft = saved_by(m, x)
    assert n_elems(fused) < 0.6 * n_elems(peft), (n_elems(fused), n_elems(peft))

def peft_tiny(arch='qwen2', **kw):
    "A tiny model with PEFT LoRA on every linear layer, random B (every gradient non-zero), seeded."
    torch.manual_seed(0)
    cfg = {'r': 5, 'lora_alpha': 8, 'lora_dropout': 0.0, 'target_modules': 'all-linear', 'init_lora_weights': False, **kw}
    return get_peft_model(tiny_model(arch), LoraConfig(**cfg))

def loss_grads(m, ids):
    m.zero_grad(); loss = m(input_ids=ids, labels=ids).loss; loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in m.named_parameters() if p.requires_grad}

def compare(ref, fz, ids, tol=1e-5):
    (l0, g0), (l1, g1) = loss_grads(ref, ids), loss_grads(fz, ids)
    assert abs(l1 - l0) <= tol * abs(l0), (l0, l1)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        assert g0[k].abs().sum() > 0, k
        torch.testing.assert_close(g1[k], g0[k], rtol=tol, atol=tol, msg=k)

@pytest.mark.parametrize('arch', ['qwen2', 'llama'])
def test_apply_fused_lora_equals_peft(arch):
    ref, fz = peft_tiny(arch), peft_tiny(arch)
    n = fz.config.num_hidden_layers
    assert L.apply_fused_lora(fz) == 3 * n and L.apply_fused_lora(fz) == 0  # attention (q/k/v), o_proj, MLP per layer; not twice
    ids = torch.randint(0, ref.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(1))
    unfused, fns = [], (L.LoRALinearFn, L.LoRAQKVFn, L.LoRAMLPFn)
    for m in fz.modules():  # PEFT's own forward of a patched layer must not run: q/k/v get the attention's LoRAQKVFn outputs
        if '_unfused_forward' in m.__dict__: object.__setattr__(m, '_unfused_forward', (lambda f: lambda *a, **k: unfused.append(1) or f(*a, **k))(m._unfused_forward))
    applied = {f: 0 for f in fns}
    for f in fns: f.apply = (lambda g, f: lambda *a: applied.__setitem__(f, applied[f] + 1) or g(*a))(f.apply, f)
    try: compare(ref, fz, ids)
    finally:
        for f in fns: del f.apply
    assert applied == {f: n for f in fns} and len(unfused) == n  # one of each op per layer; only the attentions' own code ran unpatched
    with fz.disable_adapter(), ref.disable_adapter():  # steps aside: the base model
        torch.testing.assert_close(fz(input_ids=ids).logits, ref(input_ids=ids).logits)
    with torch.no_grad():
        lf = fz(input_ids=ids).logits
        for m in (fz, ref): m.merge_adapter()  # merged: PEFT's base layers carry the adapter, the patched ones step aside
        torch.testing.assert_close(fz(input_ids=ids).logits, ref(input_ids=ids).logits)
        torch.testing.assert_close(fz(input_ids=ids).logits, lf, rtol=1e-4, atol=1e-4)

def test_generate_with_kv_cache_is_unchanged():
    "HF generate (GRPO's fallback engine) through the patched attention, with its KV cache: the same greedy tokens and scores."
    ref, fz = peft_tiny(), peft_tiny()
    L.apply_fused_lora(fz)
    ids = torch.randint(3, ref.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    kw = dict(max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad(): a, b = ref.generate(input_ids=ids, **kw), fz.generate(input_ids=ids, **kw)
    assert torch.equal(a.sequences, b.sequences) and a.sequences.shape[1] == 7 + 12
    torch.testing.assert_close(torch.stack(b.scores), torch.stack(a.scores), rtol=1e-4, atol=1e-4)

def test_layers_outside_the_ops_stay_peft():
    "LoRA on the embedding and the LM head (no fused op there): those keep PEFT's forward; the result still equals PEFT's."
    tm = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'embed_tokens', 'lm_head']
    ref, fz = peft_tiny(target_modules=tm), peft_tiny(target_modules=tm)
    assert L.apply_fused_lora(fz) == 3 * fz.config.num_hidden_layers
    ids = torch.randint(0, ref.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(1))
    compare(ref, fz, ids)

def test_apply_fused_lora_negative_control(monkeypatch):
    "A fused model that reads a scaling 1% off must fail the comparison."
    ref, fz = peft_tiny(), peft_tiny()
    L.apply_fused_lora(fz)
    parts = L.lora_parts
    monkeypatch.setattr(L, 'lora_parts', lambda m: (parts(m)[0] * 1.01, *parts(m)[1:]))
    ids = torch.randint(0, ref.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError): compare(ref, fz, ids)

def test_fused_under_bf16_autocast_and_gradient_checkpointing():
    "Under CPU bf16 autocast (as a bf16 Trainer runs) and with gradient checkpointing, the fused model is as close to the fp32 result as PEFT's is."
    ref, fz = peft_tiny(), peft_tiny()
    L.apply_fused_lora(fz)
    for m in (ref, fz): m.train(); m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    ids = torch.randint(0, ref.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(1))
    l32, g32 = loss_grads(ref, ids)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        (l0, g0), (l1, g1) = loss_grads(ref, ids), loss_grads(fz, ids)
    assert abs(l1 - l32) < 2e-2 * abs(l32) and abs(l1 - l0) < 2e-2 * abs(l0)
    err_peft, err_fused = (max(rel(g[k], g32[k]) for k in g32) for g in (g0, g1))
    assert 0 < err_fused < 1.5 * err_peft + 1e-3, (err_fused, err_peft)  # bf16 differs from fp32 (0 <); no worse than PEFT's bf16

def test_liger_mlp_patch_is_taken_over():
    "A stand-in for Liger's instance patch of the MLP forward (liger_kernel is not installed here): fused_lora owns the MLP; the Liger forward runs only when adapters are off."
    fz, called = peft_tiny(), []
    for layer in fz.base_model.model.model.layers:
        mlp = layer.mlp
        orig = mlp.forward
        mlp.forward = lambda x, _o=orig: called.append(1) or _o(x)  # as Liger binds LigerSwiGLUMLP.forward to the instance
    L.apply_fused_lora(fz)
    ids = torch.randint(0, fz.config.vocab_size, (2, 9))
    fz(input_ids=ids)
    assert called == []
    with fz.disable_adapter(): fz(input_ids=ids)
    assert len(called) == fz.config.num_hidden_layers


def test_liger_is_told_to_leave_the_mlp():
    "Liger patches the model in Trainer.train, after Run.fit applied fused_lora: with both on, its SwiGLU is switched off in TrainingArguments."
    from ftnb.runs import trainer_kwargs
    both = RunConfig.model_validate({'adapter': {'dropout': 0.0}, 'accel': {'liger': True, 'fused_lora': True}})
    assert trainer_kwargs(both)['liger_kernel_config'] == {'swiglu': False} and trainer_kwargs(both)['use_liger_kernel']
    for acc in ({'liger': True}, {'fused_lora': True}):
        assert 'liger_kernel_config' not in trainer_kwargs(RunConfig.model_validate({'adapter': {'dropout': 0.0}, 'accel': acc}))

def test_mlp_of_ligers_class_is_patched():
    "Liger swaps transformers' MLP class for its LigerSwiGLUMLP (later models are built from it): such an MLP is still a SwiGLU MLP to patch."
    fz = peft_tiny()
    for layer in fz.base_model.model.model.layers:  # a stand-in: Liger's class name, no act_fn (liger-kernel is not installed here)
        del layer.mlp.act_fn; layer.mlp.__class__ = type('LigerSwiGLUMLP', (type(layer.mlp),), {})
    assert L._silu(fz.base_model.model.model.layers[0].mlp) and L.apply_fused_lora(fz) == 3 * fz.config.num_hidden_layers

@pytest.mark.parametrize('kw, field', [({'lora_dropout': 0.1}, 'adapter.dropout=0.1'), ({'use_dora': True}, "adapter.method='dora'"),
                                       ({'lora_bias': True}, 'adapter.lora_bias'), ({'target_modules': ['q_proj']}, 'accel.fused_lora')])
def test_apply_fused_lora_refuses(kw, field):
    m = peft_tiny(**kw)
    with pytest.raises(ConfigError, match='Fix: ') as e: L.apply_fused_lora(m)
    assert field in str(e.value)
    assert not any('_unfused_forward' in x.__dict__ for x in m.modules())  # nothing patched before the refusal

def test_apply_fused_lora_refuses_full_and_two_adapters():
    with pytest.raises(ConfigError, match='accel.fused_lora=True: the model has no LoRA layers'): L.apply_fused_lora(tiny_model())
    m = peft_tiny()
    m.add_adapter('other', LoraConfig(r=4, lora_dropout=0.0, target_modules='all-linear'))
    m.base_model.set_adapter(['default', 'other'])
    with pytest.raises(ConfigError, match='one active adapter'): L.apply_fused_lora(m)

@pytest.mark.parametrize('d, field', [({'accel': {'fused_lora': True}}, 'adapter.dropout=0.05'),
    ({'adapter': {'method': 'dora', 'dropout': 0}, 'accel': {'fused_lora': True}}, "adapter.method='dora'"),
    ({'adapter': {'method': 'full', 'dropout': 0}, 'accel': {'fused_lora': True}, 'train': {'lr': 2e-5}}, "adapter.method='full'"),
    ({'adapter': {'dropout': 0}, 'accel': {'fused_lora': True, 'fp8': True}}, 'accel.fused_lora=True'),
    ({'adapter': {'dropout': 0}, 'accel': {'fused_lora': True, 'qat': True}}, 'accel.fused_lora=True'),
    ({'adapter': {'dropout': 0}, 'accel': {'fused_lora': True, 'fsdp': True}}, 'accel.fsdp=True')])
def test_config_refuses(d, field):
    with pytest.raises(ConfigError, match='Fix: ') as e: RunConfig.model_validate(d)
    assert str(e.value).startswith(field)


@pytest.mark.trains
def test_train_with_fused_lora(tmp_path):
    "ftnb.train with accel.fused_lora patches the model (runs.Run.fit), the first loss equals the unfused run's and the loss falls."
    import ftnb
    from ftnb.events import read_jsonl
    def cfg(name, fused):
        return RunConfig.model_validate({'model': {'dtype': 'float32'},
            'data': {'path': 'toy:addition', 'max_length': 32, 'max_samples': 64, 'eval_fraction': 0},
            'adapter': {'method': 'lora', 'r': 8, 'dropout': 0.0},
            'train': {'output_dir': str(tmp_path), 'run_name': name, 'max_steps': 8, 'batch_size': 8, 'logging_steps': 1, 'lr': 1e-2, 'save_steps': 100, 'seed': 0},
            'accel': {'fused_lora': fused}})
    runs = {f: ftnb.train(cfg(f'fused{int(f)}', f)) for f in (False, True)}
    patched = [m for m in runs[True].model.modules() if '_unfused_forward' in m.__dict__]
    assert patched and not any('_unfused_forward' in m.__dict__ for m in runs[False].model.modules())
    loss = {f: [r['loss'] for r in read_jsonl(r.run_dir/'metrics.jsonl') if 'loss' in r] for f, r in runs.items()}
    assert abs(loss[True][0] - loss[False][0]) < 1e-4 * loss[False][0], loss
    assert sum(loss[True][-3:]) / 3 < loss[True][0] - 0.3, loss[True]


def test_bench_smoke(tmp_path):
    "bench/lora_ops.py --smoke: tiny shapes on the CPU, every op's row in the JSON."
    out = tmp_path/'lora_ops.json'
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'lora_ops.py'), '--smoke', '--out', str(out)], capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert {'date', 'device', 'versions', 'rows', 'summary'} <= d.keys()
    ops = {(row['op'], row['way']) for row in d['rows']}
    assert {(o, w) for o in ('linear_q', 'linear_o', 'qkv', 'mlp', 'swiglu') for w in ('fused', 'unfused')} <= ops, ops
    for row in d['rows']: assert row['fwd_ms'] > 0 and row['fwd_bwd_ms'] > 0 and row['max_abs_err'] < 1e-3
