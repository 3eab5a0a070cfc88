"On-policy GRPO without the separate old-policy forward: the loss, its gradients and the importance-sampling ratio equal TRL's stock path (fp32, tiny model, CPU), and the forward is really skipped."
import pytest, torch
from trl import GRPOTrainer

from ftnb.config import DataCfg, MethodCfg, RunConfig, TrainCfg
from ftnb.events import read_jsonl
from ftnb.grpo import train

def small(tmp_path, name, grad_accum=1, **method) -> RunConfig:
    return RunConfig(data=DataCfg(path='toy:addition', max_samples=32),
                     method=MethodCfg(name='grpo', num_generations=4, max_completion_length=6, max_model_len=32,
                                      rewards=[{'name': 'numeric_answer', 'tol': 50}], **method),
                     train=TrainCfg(output_dir=str(tmp_path), run_name=name, batch_size=8, lr=1e-3, logging_steps=1,
                                    max_steps=2, save_steps=100, grad_accum=grad_accum))

@pytest.fixture
def no_grad_forwards(monkeypatch):
    "Counts TRL's log-prob forwards made without gradients (the old-policy pass; beta=0 has no reference pass)."
    n = {'no_grad': 0, 'grad': 0}
    orig = GRPOTrainer._get_per_token_logps_and_entropies
    def counted(self, *a, **k):
        n['grad' if torch.is_grad_enabled() else 'no_grad'] += 1
        return orig(self, *a, **k)
    monkeypatch.setattr(GRPOTrainer, '_get_per_token_logps_and_entropies', counted)
    return n

@pytest.mark.parametrize('how,accum,old_forwards', [('auto', 1, 0), ('forward', 1, 2), ('auto', 2, 0)])
def test_old_policy_forward_skipped_on_policy(tmp_path, no_grad_forwards, how, accum, old_forwards):
    res = train(small(tmp_path, how, grad_accum=accum, old_logprobs=how))
    assert (res.status, res.step) == ('finished', 2)
    # 2 steps, one loss forward per micro-batch; with accumulation TRL generates once per step for all its micro-batches
    assert no_grad_forwards == {'no_grad': old_forwards, 'grad': 2 * accum}
    rows = [r for r in read_jsonl(res.run_dir/'metrics.jsonl') if 'sampling/importance_sampling_ratio/mean' in r]
    assert len(rows) == 2 and all('sampling/sampling_logp_difference/mean' in r for r in rows)  # TRL's metrics, either way

def test_loss_grads_and_ratio_equal_trl(tmp_path):
    torch.manual_seed(0)
    tr = train(small(tmp_path, 'eq', old_logprobs='forward')).trainer
    tr.model.train()
    g = torch.Generator().manual_seed(1)
    gen = tr._generate
    def noisy(prompts):  # the engine's log-probs off the trainer's, so the correction truncates/masks some sequences
        out = list(gen(prompts))
        out[4] = [[x + 0.6 * torch.randn((), generator=g).item() for x in l] for l in out[4]]
        return tuple(out)
    tr._generate = noisy
    batch = next(iter(tr.get_train_dataloader()))
    stock = tr._generate_and_score_completions(batch)  # TRL's path: separate no-grad forward, ratio made at generation
    assert {'old_per_token_logps', 'importance_sampling_ratio', 'sampling_per_token_logps'} <= stock.keys()
    stock['advantages'] = torch.randn(stock['advantages'].shape, generator=g)  # the untrained model's rewards tie: all zero
    ours = {k: v for k, v in stock.items() if k not in ('old_per_token_logps', 'importance_sampling_ratio')}  # as 'auto' leaves it
    params = [p for p in tr.model.parameters() if p.requires_grad]
    def loss_and_grads(inputs):
        tr.model.zero_grad()
        loss = tr._compute_loss(tr.model, inputs)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]
    ls, gs = loss_and_grads(stock)
    lo, go = loss_and_grads(ours)
    r = stock['importance_sampling_ratio']
    print('loss', ls.item(), lo.item(), 'ratio', r.flatten().tolist())
    assert (r == 0).any() and (r > 0).any()  # some sequences masked by the correction, some kept: the test can tell
    assert torch.allclose(ours['importance_sampling_ratio'], r, rtol=1e-5, atol=1e-6)
    assert torch.allclose(lo, ls, rtol=1e-5, atol=1e-7) and ls.abs() > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(go, gs))
    assert sum(a.abs().sum() for a in gs) > 0
