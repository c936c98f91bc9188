"""Training, Tinker-shaped: forward_backward / optim_step / save_state / load_state over one model.

Knows datums (token ids plus per-token weights, sampler logprobs and advantages), losses and
weights. Knows nothing of chat formats, rollouts, rewards or the sampler: the sampling engine gets
new weights only through `Trainer.sampler_state_dict()`.

    from hone.training import Trainer, LossConfig
    trainer = Trainer(model, lora_rank=16)
    trainer.forward_backward(datums, loss="cispo", loss_config=LossConfig())
    trainer.optim_step(AdamParams(learning_rate=1e-4))

Beside the Trainer: `checkpoint` owns the checkpoint's files (layout, save/load, serving an adapter),
`plan` packs datums into micro-batches, `losses`, `advantages` and `head` are the maths.
"""

from hone.training.advantages import group_advantages, is_zero_variance
from hone.training.losses import LOSSES, LossConfig, LossFn, cispo, cross_entropy, get_loss, importance_sampling, ppo
from hone.training.trainer import Trainer

__all__ = [
    "LOSSES",
    "LossConfig",
    "LossFn",
    "Trainer",
    "cispo",
    "cross_entropy",
    "get_loss",
    "group_advantages",
    "importance_sampling",
    "is_zero_variance",
    "ppo",
]
