"""Liger on a CUDA GPU: the patched model's loss and LoRA gradients equal the unpatched model's, within what bf16 itself
costs. A Qwen2.5-0.5B-shaped model (hidden 896, vocabulary 151,936, tied embeddings) with 4 layers and random bf16 weights,
LoRA r16 on all linear layers with both A and B random (so every LoRA gradient is non-zero).

Three paths:
- SFT as ftnb runs it: `accel.liger` -> ftnb.sft.training_args -> TRL's SFTTrainer, whose `use_liger_kernel` makes
  Trainer.train apply Liger's RMSNorm, RoPE and SwiGLU (TRL 1.16 refuses Liger's fused linear cross-entropy and computes the
  loss with its own chunked LM head). The same code path is TRL's own `use_liger_kernel`.
- Liger's fused linear cross-entropy itself (`fused_linear_cross_entropy=True` with the layer kernels), on the HF model.
- GRPO: TRL 1.16's GRPOTrainer has no `use_liger_loss` (Liger's fused linear GRPO loss is not wired); its
  `use_liger_kernel` applies the same layer kernels. One GRPO batch (HF generation), loss and LoRA gradients with and without
  (on-policy with beta 0 the loss value is about 0 by construction, so there the gradients carry the comparison).

Tolerance, self-calibrated: each comparison also measures how far the unpatched bf16 model is from the same weights in
fp32 (`d_bf16`). Liger's kernels are meant to be exact up to rounding, so the patched bf16 model must be within
3 x d_bf16 (+ a floor) of the unpatched one: two bf16 implementations that each round like bf16 differ by at most about
twice that distance (triangle inequality), and 3x leaves room for a different order of accumulation. A wrong kernel (a
missing RoPE, a wrong norm) moves the per-token losses by their own spread and the gradients by O(1): the test prints the
spread and a control (the gradient distance to another batch) to show the bound is far below what a fault produces.
Run on the GPU machine: PYTHONPATH=/tmp/site:$PWD pytest -m gpu tests/gpu/test_liger_gpu.py -rP"""
import copy, json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT/'bench')]
torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

LAYERS, SEQ, BATCH = 4, 512, 8

@pytest.fixture(autouse=True)
def _restore_qwen2_module():
    "Liger patches transformers' qwen2 module (RoPE function, RMSNorm and MLP classes): undo it after each test."
    pytest.importorskip('liger_kernel')
    from transformers.models.qwen2 import modeling_qwen2 as mq
    saved, fwd = dict(vars(mq)), mq.Qwen2ForCausalLM.forward
    yield
    for k in ('apply_rotary_pos_emb', 'Qwen2RMSNorm', 'Qwen2MLP'): setattr(mq, k, saved[k])
    mq.Qwen2ForCausalLM.forward = fwd

def _model_dir(tmp):
    "A saved 4-layer model of Qwen2.5-0.5B's widths and vocabulary, with bench/grpo.py's 151,936-entry tokenizer."
    from transformers import AutoModelForCausalLM, Qwen2Config
    import grpo
    path = Path(tmp)/'qwen-4l'
    if (path/'config.json').exists(): return path
    cfg = Qwen2Config(**grpo.QWEN, **{**grpo.SIZES['0.5b'], 'num_hidden_layers': LAYERS}, pad_token_id=151643)
    torch.manual_seed(0)
    with torch.device('cuda'): m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.save_pretrained(path); grpo.tokenizer().save_pretrained(path)
    return path

@pytest.fixture(scope='module')
def model_dir(tmp_path_factory): return _model_dir(tmp_path_factory.mktemp('liger'))

def _random_lora_b(model):
    "PEFT starts B at zero, which makes A's gradient zero: give B random values so every LoRA gradient is compared."
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02)

def grads(model, loss_fn):
    "(loss, all LoRA gradients as one fp32 vector) for loss_fn(model)."
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model); loss.backward()
    g = torch.cat([p.grad.float().flatten() for n, p in model.named_parameters() if 'lora_' in n and p.grad is not None])
    model.zero_grad(set_to_none=True)
    return loss.item(), g

rel = lambda a, b: ((a - b).norm() / b.norm()).item()

def compare(name, ref32, bf, lig, **extra):
    "Assert the Liger run is within 3x the bf16-vs-fp32 distance of the unpatched bf16 run (loss and gradients); print the numbers."
    (l32, g32), (lbf, gbf), (llg, glg) = ref32, bf, lig
    d_bf16_g, d_liger_g = rel(gbf, g32), rel(glg, gbf)
    d_bf16_l, d_liger_l = abs(lbf - l32), abs(llg - lbf)
    out = dict(test=name, loss_fp32=l32, loss_bf16=lbf, loss_liger=llg, d_bf16_loss=d_bf16_l, d_liger_loss=d_liger_l,
               d_bf16_grad=d_bf16_g, d_liger_grad=d_liger_g, grad_cos=torch.nn.functional.cosine_similarity(glg, gbf, dim=0).item(),
               lora_grad_elems=gbf.numel(), **extra)
    print('LIGER-GPU', json.dumps(out))
    assert gbf.norm() > 0 and torch.isfinite(glg).all()
    assert d_liger_l <= 3 * d_bf16_l + 2e-3, out  # floor 2e-3: 1/30 of bf16's spacing at a loss of 12 (0.0625)
    assert d_liger_g <= 3 * d_bf16_g + 1e-3, out
    return out

def test_sft_liger_through_ftnb_equals_unpatched(model_dir, tmp_path):
    "accel.liger as ftnb applies it (TRL's use_liger_kernel, applied by Trainer.train): same loss and LoRA gradients on one batch."
    import random
    from trl import SFTTrainer
    from ftnb import sft
    from ftnb.config import RunConfig
    rng = random.Random(0); letters = 'abcdefghijklmnopqrstuvwxyz '
    data = tmp_path/'d.jsonl'
    data.write_text(''.join(json.dumps({'prompt': ''.join(rng.choice(letters) for _ in range(rng.randint(SEQ // 16, SEQ // 4))),
                                        'completion': ''.join(rng.choice(letters) for _ in range(rng.randint(SEQ // 8, SEQ // 2)))}) + '\n' for _ in range(BATCH)))
    cfg = RunConfig.model_validate({'model': {'name_or_path': str(model_dir), 'dtype': 'bfloat16'},
        'data': {'path': str(data), 'eval_fraction': 0, 'max_length': SEQ}, 'adapter': {'method': 'lora', 'r': 16, 'dropout': 0.0},
        'train': {'output_dir': str(tmp_path), 'run_name': 'liger', 'batch_size': BATCH, 'max_steps': 1}, 'accel': {'liger': True}})
    tok, model, train_ds, _ = sft.build(cfg)
    args = sft.training_args(cfg)
    assert args.use_liger_kernel
    _random_lora_b(model)
    tr = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    assert tr.args.liger_kernel_config.get('fused_linear_cross_entropy') is False  # TRL 1.16: layer kernels only
    batch = next(iter(tr.get_train_dataloader()))
    tr.model.train()
    loss = lambda m: tr.compute_loss(m, batch)
    m32 = copy.deepcopy(tr.model).float()
    ref32 = grads(m32, loss); del m32
    bf = grads(tr.model, loss)
    try: from transformers.integrations.liger import apply_liger_kernel  # what Trainer.train calls for use_liger_kernel
    except ImportError: apply_liger_kernel = None
    if apply_liger_kernel: apply_liger_kernel(tr.model, tr.args.liger_kernel_config)
    else:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        _apply_liger_kernel_to_instance(model=tr.model.get_base_model(), **tr.args.liger_kernel_config)
    mlp = tr.model.get_base_model().model.layers[0].mlp
    assert mlp._get_name() == 'LigerSwiGLUMLP', mlp._get_name()
    compare('sft_ftnb_accel_liger', ref32, bf, grads(tr.model, loss), tokens=int(batch['attention_mask'].sum()))

def test_fused_linear_cross_entropy_equals_unpatched(model_dir):
    "Liger's fused linear cross-entropy (and its layer kernels) on the HF model with LoRA: same loss and gradients; per-token log-probs of the layer kernels too."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules='all-linear', lora_dropout=0.0))
    _random_lora_b(model); model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151_000, (BATCH, SEQ), generator=g).cuda()
    labels = ids.clone(); labels[:, :SEQ // 4] = -100  # a prompt part without loss, as in SFT
    other = torch.randint(0, 151_000, (BATCH, SEQ), generator=g).cuda()
    loss = lambda m: m(input_ids=ids, labels=labels).loss
    def token_losses(m):
        with torch.no_grad():
            lg = m(input_ids=ids).logits[:, :-1].float()
            return torch.nn.functional.cross_entropy(lg.transpose(1, 2), labels[:, 1:], reduction='none')[labels[:, 1:] != -100]
    m32 = copy.deepcopy(model).float()
    ref32, t32 = grads(m32, loss), token_losses(m32); del m32
    bf, tbf = grads(model, loss), token_losses(model)
    ctrl = rel(grads(model, lambda m: m(input_ids=other, labels=other).loss)[1], bf[1])  # another batch: what a real difference looks like
    _apply_liger_kernel_to_instance(model=model.get_base_model(), rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=False)
    tlg = token_losses(model)  # layer kernels only: logits still exist, compare per token
    _apply_liger_kernel_to_instance(model=model.get_base_model(), fused_linear_cross_entropy=True)
    out = compare('fused_linear_cross_entropy', ref32, bf, grads(model, loss), control_grad_other_batch=ctrl,
                  token_loss_std=tbf.std().item(), token_d_bf16=(tbf - t32).abs().mean().item(), token_d_liger=(tlg - tbf).abs().mean().item())
    assert out['token_d_liger'] <= 3 * out['token_d_bf16'] + 1e-3, out
    assert out['token_d_bf16'] < 0.1 * out['token_loss_std'] and ctrl > 20 * out['d_liger_grad'], out  # the bound is far below a real difference

def test_grpo_liger_kernel_step_equals_unpatched(model_dir, tmp_path):
    "TRL GRPO (HF generation) with use_liger_kernel: one batch's loss and LoRA gradients with and without the kernels."
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    tok = AutoTokenizer.from_pretrained(model_dir); tok.padding_side = 'left'
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    ds = Dataset.from_list([{'prompt': 'abcdefgh' * 8 + str(i)} for i in range(16)])
    reward = lambda completions, **kw: [float(sum(map(ord, c)) % 7) for c in completions]  # varied, so advantages are not all zero
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=16, num_generations=8, max_completion_length=32,
                      learning_rate=1e-5, beta=0.0, report_to='none', save_strategy='no', bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
                      use_liger_kernel=True, max_steps=1)  # use_cpu: only for a CPU dry run of this plumbing
    tr = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds, processing_class=tok,
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
    _random_lora_b(tr.model)
    inputs = tr._generate_and_score_completions([ds[i] for i in range(16)])
    assert inputs['advantages'].abs().sum() > 0
    tr.model.train(); tr.current_gradient_accumulation_steps = 1  # set by Trainer's training loop, read by the loss's normaliser
    loss = lambda m: tr._compute_loss(m, inputs)
    m32 = copy.deepcopy(tr.model).float()
    ref32 = grads(m32, loss); del m32
    bf = grads(tr.model, loss)
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    _apply_liger_kernel_to_instance(model=tr.model.get_base_model(), **tr.args.liger_kernel_config)  # what Trainer.train applies
    compare('grpo_use_liger_kernel', ref32, bf, grads(tr.model, loss), completion_tokens=int(inputs['completion_mask'].sum()),
            note='TRL 1.16 GRPOTrainer has no use_liger_loss; use_liger_kernel = RMSNorm, RoPE, SwiGLU')
