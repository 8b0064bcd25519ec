"""Checkpoint upgrade: older SCL state dicts to the current parameter shapes, as one explicit, named step.

Two shapes of older checkpoints differ from today's parameters (spec §1.1):

* `itc_temperature` was a 0-d tensor (the reference's `cl_temp`, and this package before 0.1); it is now `(1,)`,
  since FSDP cannot shard a 0-d parameter;
* the token-type table of a pre-training checkpoint has 2 rows, the NLVR2 head's 3 (the right image gets type 2);
  the rows the checkpoint lacks copy its last row, as the reference does when it fine-tunes NLVR2.

`upgrade_state_dict` applies both to a state dict. `from_pretrained` applies the same step while it reads the
checkpoint, through transformers' weight-conversion mechanism (`register_checkpoint_upgrades`, called when
`transformers_scl` is imported): each tensor is converted as it is loaded, nothing is read twice.
"""

import torch
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter

TEMPERATURE = "itc_temperature"
TOKEN_TYPES = "token_type_embeddings.weight"


def upgrade_temperature(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d `itc_temperature` as the `(1,)` parameter; other shapes unchanged."""
    return tensor.reshape(1) if tensor.dim() == 0 else tensor


def upgrade_token_types(table: torch.Tensor, num_token_types: int) -> torch.Tensor:
    """A `(rows, hidden)` token-type table grown to `num_token_types` rows, the new rows copying the last one
    (spec §1.1). Tables with as many rows or more are unchanged (a larger table is left to the size check)."""
    if table.dim() != 2 or table.shape[0] >= num_token_types:
        return table
    return torch.cat([table, table[-1:].expand(num_token_types - table.shape[0], -1)], dim=0)


def upgrade_state_dict(state_dict: dict[str, torch.Tensor], num_token_types: int) -> dict[str, torch.Tensor]:
    """The upgrade step on a whole state dict (any model class's keys): a new dict, the other tensors shared."""
    upgraded = dict(state_dict)
    for key, tensor in state_dict.items():
        if key.split(".")[-1] == TEMPERATURE:
            upgraded[key] = upgrade_temperature(tensor)
        elif key.endswith(TOKEN_TYPES) and "text_model." not in key:  # SCL's table, not the text tower's
            upgraded[key] = upgrade_token_types(tensor, num_token_types)
    return upgraded


class _KeepAsSaved(ConversionOps):
    """Saving writes the current shapes as they are."""

    def convert(self, input_dict, source_patterns=None, target_patterns=None, **kwargs):
        return input_dict

    @property
    def reverse_op(self) -> ConversionOps:
        return self


class _UpgradeOnLoad(ConversionOps):
    """The upgrade step on the tensors transformers' loader hands over, one parameter at a time."""

    def convert(self, input_dict, source_patterns=None, target_patterns=None, config=None, **kwargs):
        name = kwargs.get("full_layer_name") or ""
        upgraded = {}
        for key, tensors in input_dict.items():
            tensor = tensors[0] if isinstance(tensors, list) else tensors
            if key.endswith(TEMPERATURE):
                tensor = upgrade_temperature(tensor)
            # SCL's own table, not the text tower's (`text_model.embeddings.token_type_embeddings`).
            elif "text_model." not in name and getattr(config, "num_token_types", None):
                tensor = upgrade_token_types(tensor, config.num_token_types)
            upgraded[key] = tensor
        return upgraded

    @property
    def reverse_op(self) -> ConversionOps:
        return _KeepAsSaved()


# The classes with an ITC head, the only ones that hold `itc_temperature`.
ITC_CLASSES = ("SCLForPreTraining", "SCLForImageTextRetrieval", "SCLForZeroShotImageClassification")


def register_checkpoint_upgrades():
    """Let `from_pretrained` of every SCL model class apply the upgrade step (idempotent).

    transformers looks a model's converters up by class name first, then by `model_type`, for the model and for each
    `PreTrainedModel` inside it. The token-type converter is registered for `model_type` "scl", so it reaches the
    `SCLModel` of every class (once: the heads register no class-specific table converter). The temperature converter
    is registered only for the classes with an ITC head: a converter must match a key of the model it is given to.
    """
    token_types = WeightConverter(
        source_patterns=TOKEN_TYPES, target_patterns=TOKEN_TYPES, operations=[_UpgradeOnLoad()]
    )
    register_checkpoint_conversion_mapping("scl", [token_types], overwrite=True)
    for class_name in ITC_CLASSES:
        temperature = WeightConverter(
            source_patterns=TEMPERATURE, target_patterns=TEMPERATURE, operations=[_UpgradeOnLoad()]
        )
        register_checkpoint_conversion_mapping(class_name, [temperature], overwrite=True)


__all__ = ["register_checkpoint_upgrades", "upgrade_state_dict", "upgrade_temperature", "upgrade_token_types"]
