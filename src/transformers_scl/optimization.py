"""SCL's optimizer: AdamW over parameter groups with learning-rate multipliers for the heads and the fusion module.

spec §3.2 (`set_schedule`): parameters of the task and pre-training heads train at `lr * lr_mult_head`, parameters
of the co-attention fusion (every name containing `cross_modal`) at `lr * lr_mult_cross_modal`, everything else
(both unimodal towers, the ITC projections and temperature, `rank_output`, `token_type_embeddings`) at `lr`.
Biases and LayerNorm parameters get no weight decay. AdamW uses betas (0.9, 0.98) and eps 1e-8; the learning rate
warms up linearly and then decays linearly to 0, which is `Trainer`'s default `linear` schedule.
"""

from collections.abc import Iterable

import torch
from torch import nn
from transformers.trainer_pt_utils import get_parameter_names

# spec §3.2: module names whose parameters get `lr_mult_head` (`rank_output` is deliberately absent: base lr).
HEAD_MODULE_NAMES = ("vqa_classifier", "nlvr2_classifier", "snli_classifier", "mlm_score", "itm_score")
CROSS_MODAL_MODULE_MARKER = "cross_modal"
ADAMW_BETAS = (0.9, 0.98)
ADAMW_EPS = 1e-8


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: biases and every LayerNorm parameter (spec §3.2)."""
    decay = set(get_parameter_names(model, [nn.LayerNorm], [r"bias", r"layernorm", r"(?:^|\.)norm(?:$|\.)"]))
    return {name for name, _ in model.named_parameters() if name not in decay}


def parameter_role(name: str, head_names: Iterable[str] = HEAD_MODULE_NAMES) -> str:
    """`"head"`, `"cross_modal"` or `"base"`: which learning-rate multiplier a parameter gets (spec §3.2)."""
    # A head name wins over `cross_modal` (no SCL parameter matches both).
    if any(head in name for head in head_names):
        return "head"
    if CROSS_MODAL_MODULE_MARKER in name:
        return "cross_modal"
    return "base"


def scl_parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    lr_mult_head: float,
    lr_mult_cross_modal: float,
    head_names: Iterable[str] = HEAD_MODULE_NAMES,
) -> list[dict]:
    """Optimizer parameter groups of spec §3.2: {base, head, cross-modal} learning rate × {decay, no decay}.

    Each group is `{"params", "lr", "weight_decay", "name"}`; empty groups and frozen parameters are left out.
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    for name, value in (("lr_mult_head", lr_mult_head), ("lr_mult_cross_modal", lr_mult_cross_modal)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    head_names = tuple(head_names)
    multipliers = {"base": 1.0, "head": lr_mult_head, "cross_modal": lr_mult_cross_modal}
    no_decay = no_decay_parameter_names(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        role = parameter_role(name, head_names)
        decays = name not in no_decay
        if (role, decays) not in groups:
            groups[role, decays] = {
                "params": [],
                "lr": lr * multipliers[role],
                "weight_decay": weight_decay if decays else 0.0,
                "name": role if decays else f"{role}_no_decay",
            }
        groups[role, decays]["params"].append(parameter)
    return list(groups.values())


def create_optimizer(
    model: nn.Module,
    args=None,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    lr_mult_head: float | None = None,
    lr_mult_cross_modal: float | None = None,
) -> torch.optim.Optimizer:
    """The optimizer over [`scl_parameter_groups`], one function for every script and notebook.

    With `args` (`TrainingArguments`, or `SCLTrainingArguments` that carry `lr_mult_head` / `lr_mult_cross_modal`):
    the optimizer `--optim` names, with `--adam_beta1/2` and `--adam_epsilon`, as `Trainer` would build it; learning
    rate, weight decay and multipliers come from `args` unless passed here. Without `args`: AdamW with spec §3.2's
    betas (0.9, 0.98) and eps 1e-8. Pair it with the linear warm-up/decay schedule (`Trainer`'s default).

    `SCLTrainer` calls this from `create_optimizer`; with a plain `Trainer`, pass
    `optimizers=(create_optimizer(model, args), None)`.
    """

    def setting(value, name):
        value = value if value is not None else getattr(args, name, None)
        if value is None:
            raise ValueError(f"create_optimizer needs `{name}`: pass it, or `args` that define it.")
        return value

    groups = scl_parameter_groups(
        model,
        lr=setting(lr, "learning_rate"),
        weight_decay=setting(weight_decay, "weight_decay"),
        lr_mult_head=setting(lr_mult_head, "lr_mult_head"),
        lr_mult_cross_modal=setting(lr_mult_cross_modal, "lr_mult_cross_modal"),
    )
    if args is None:
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=ADAMW_BETAS, eps=ADAMW_EPS)
    from transformers import Trainer

    # A public static method: `--optim` (AdamW by default) with its keyword arguments; each group keeps its own lr.
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls(groups, **optimizer_kwargs)


__all__ = [
    "ADAMW_BETAS",
    "ADAMW_EPS",
    "HEAD_MODULE_NAMES",
    "create_optimizer",
    "no_decay_parameter_names",
    "parameter_role",
    "scl_parameter_groups",
]
