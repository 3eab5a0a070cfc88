"Two GRPO steps through TRL's GRPOTrainer in colocate mode, served by one of ftnb's engines (shared by the engine tests)."
import torch

def two_grpo_steps(model, tok, engine, tmp_path, max_completion_length:int):
    "Train `model` 2 steps with a length reward; returns (trainer, per-step sampling logs, whether trainable weights moved)."
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from ftnb.engine import serve_trl
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ds = Dataset.from_dict({'prompt': [f'{a}+{b}=' for a in range(4) for b in range(2)]})
    def reward_len(completions, **kw): return [float(len(c)) for c in completions]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=max_completion_length, max_steps=2, learning_rate=1e-2, use_vllm=True,
                      vllm_mode='colocate', use_cpu=True, report_to=[], logging_steps=1, save_strategy='no', bf16=False,
                      temperature=1.0)
    with serve_trl(engine):
        tr = GRPOTrainer(model=model, reward_funcs=reward_len, args=args, train_dataset=ds, processing_class=tok)
    tr.train()
    logs = [h for h in tr.state.log_history if 'sampling/sampling_logp_difference/max' in h]
    return tr, logs, any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
