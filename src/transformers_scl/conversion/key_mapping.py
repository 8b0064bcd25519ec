"""Every state-dict key of an original SCL checkpoint (spec §6.2) → its transformers-scl name, or an explicit drop.

`map_state_dict` applies the rules in order; a key no rule covers is an error, never silently skipped (the reference
loads with `strict=False`, spec §7.2 item 10, which hides such mismatches). Keys are relative to the task model
(`scl.*` for the base model, head names at the top level).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_VISUAL = r"vision_transformer\.visual\."
_BLOCK = _VISUAL + r"transformer\.resblocks\.(?P<i>\d+)\."
_VISION = "scl.vision_model."
_VISION_LAYER = _VISION + "encoder.layers.{i}."

# Unused parts of the original module, dropped by name with the reason logged: the transformers 4.6 buffer, the
# RoBERTa pooler (spec §1.1), the MAE decoder (spec §1.2) and GLSCL's MLTC mask token (spec §1.2, §2.5).
DROP_RULES: tuple[tuple[str, str], ...] = (
    (
        r"text_transformer\.embeddings\.position_ids",
        "the transformers 4.6 `position_ids` buffer, which RoBERTa recomputes",
    ),
    (r"text_transformer\.pooler\..+", "the RoBERTa pooler, never used by SCL (our text tower has none)"),
    (
        r"vision_transformer\.(decoder_embed|mask_token|decoder_pos_embed|decoder_blocks|decoder_norm|decoder_pred)"
        r"(\..+)?",
        "the MAE decoder left over from the authors' VL-MAE experiments, never used by SCL",
    ),
    (_VISUAL + r"visual_mask_token", "GLSCL's MLTC mask token (`visual_mask_token`), not used by SCL"),
)

# (source regex, target template): a plain rename; `{name}` fields come from the regex's named groups.
RENAME_RULES: tuple[tuple[str, str], ...] = (
    (r"text_transformer\.(?P<rest>.+)", "scl.text_model.{rest}"),
    (_VISUAL + r"conv1\.weight", _VISION + "embeddings.patch_embedding.weight"),
    (_VISUAL + r"class_embedding", _VISION + "embeddings.class_embedding"),
    (_VISUAL + r"positional_embedding", _VISION + "embeddings.position_embedding.weight"),
    (_VISUAL + r"ln_pre\.(?P<p>weight|bias)", _VISION + "pre_layrnorm.{p}"),
    (_VISUAL + r"ln_post\.(?P<p>weight|bias)", _VISION + "post_layernorm.{p}"),
    (_BLOCK + r"attn\.out_proj\.(?P<p>weight|bias)", _VISION_LAYER + "self_attn.out_proj.{p}"),
    (_BLOCK + r"ln_1\.(?P<p>weight|bias)", _VISION_LAYER + "layer_norm1.{p}"),
    (_BLOCK + r"ln_2\.(?P<p>weight|bias)", _VISION_LAYER + "layer_norm2.{p}"),
    (_BLOCK + r"mlp\.c_fc\.(?P<p>weight|bias)", _VISION_LAYER + "mlp.fc1.{p}"),
    (_BLOCK + r"mlp\.c_proj\.(?P<p>weight|bias)", _VISION_LAYER + "mlp.fc2.{p}"),
    # Fusion keeps the reference's BertCrossLayer / Pooler / Linear names (spec §1.1, §1.4).
    (r"(?P<rest>cross_modal_(text|image)_(transform|layers|pooler)\..+)", "scl.{rest}"),
    (r"token_type_embeddings\.weight", "scl.token_type_embeddings.weight"),
    # Heads (spec §1.1, §3.1).
    (r"(?P<rest>mlm_score\.(transform\.(dense|LayerNorm)\.(weight|bias)|decoder\.weight|bias))", "{rest}"),
    (r"itm_score\.fc\.(?P<p>weight|bias)", "itm_score.fc.{p}"),
    (r"language_proj\.(?P<i>[013])\.(?P<p>weight|bias)", "itc_text_projection.{i}.{p}"),
    (r"vision_proj\.(?P<i>[013])\.(?P<p>weight|bias)", "itc_image_projection.{i}.{p}"),
    (r"(?P<head>vqa|nlvr2)_classifier\.(?P<i>[013])\.(?P<p>weight|bias)", "{head}_classifier.{i}.{p}"),
    (r"rank_output\.(?P<p>weight|bias)", "rank_output.{p}"),
)

# Heads by target-name prefix, so a head the chosen model class lacks can be dropped by an explicit rule.
HEAD_PREFIXES: dict[str, str] = {
    "mlm_score.": "MLM head",
    "itm_score.": "ITM head",
    "itc_text_projection.": "ITC text projection",
    "itc_image_projection.": "ITC image projection",
    "itc_temperature": "ITC temperature",
    "vqa_classifier.": "VQA classifier",
    "nlvr2_classifier.": "NLVR2 classifier",
    "rank_output.": "retrieval rank head",
    # The fusion stage of a task model; SCLForZeroShotImageClassification is built without it.
    "scl.token_type_embeddings.": "fusion layers",
    "scl.cross_modal_text_layers.": "fusion layers",
    "scl.cross_modal_image_layers.": "fusion layers",
    "scl.cross_modal_text_pooler.": "fusion layers",
    "scl.cross_modal_image_pooler.": "fusion layers",
}


@dataclass
class MappedStateDict:
    """Converted tensors by target name, the source key of each, and the notes worth telling the user."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    notes: list[str] = field(default_factory=list)


class CheckpointKeyError(KeyError):
    """The checkpoint's keys do not match the target model; the message lists every offending key."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _split_in_proj(match: re.Match, tensor: torch.Tensor, out: MappedStateDict, key: str):
    # spec §6.2: nn.MultiheadAttention packs [q; k; v] along dim 0 of in_proj_weight [3D, D] / in_proj_bias [3D].
    if tensor.shape[0] % 3:
        raise ValueError(f"{key} has shape {tuple(tensor.shape)}; its first dimension is not 3 x width.")
    for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
        target = _VISION_LAYER.format(i=match["i"]) + f"self_attn.{name}.{match['p']}"
        out.tensors[target] = part
        out.sources[target] = key


def _temporal(match: re.Match, tensor: torch.Tensor, out: MappedStateDict, key: str):
    # spec §1.2: temporal_embed is [1, max_frames, D]; ours is the [max_frames, D] table.
    target = _VISION + "embeddings.temporal_embedding"
    out.tensors[target] = tensor.reshape(tensor.shape[-2], tensor.shape[-1])
    out.sources[target] = key


def _temperature(match: re.Match, tensor: torch.Tensor, out: MappedStateDict, key: str):
    # The reference's scalar becomes a (1,) parameter, which FSDP can shard.
    out.tensors["itc_temperature"] = tensor.reshape(1)
    out.sources["itc_temperature"] = key


SPECIAL_RULES: tuple[tuple[str, Callable], ...] = (
    (_BLOCK + r"attn\.in_proj_(?P<p>weight|bias)", _split_in_proj),
    (_VISUAL + r"temporal_embed", _temporal),
    (r"cl_temp", _temperature),
)


def map_state_dict(state_dict: dict[str, torch.Tensor]) -> MappedStateDict:
    """Rename, split or drop every key of an original state dict; raise `CheckpointKeyError` listing unknown keys."""
    out = MappedStateDict()
    unknown = []
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"State-dict entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        if _drop(key, out):
            continue
        if _special(key, tensor, out):
            continue
        for pattern, template in RENAME_RULES:
            match = re.fullmatch(pattern, key)
            if match:
                target = template.format(**match.groupdict())
                out.tensors[target] = tensor
                out.sources[target] = key
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointKeyError(
            f"{len(unknown)} key(s) of the checkpoint match no conversion rule (nothing was written): "
            + compact_keys(unknown)
        )
    if _VISION + "embeddings.temporal_embedding" not in out.tensors:
        # spec §1.2: the GLSCL/HEAD tower is image-only; zero rows make ours compute exactly what it computes.
        out.notes.append(
            "The checkpoint has no `temporal_embed` (the image-only GLSCL variant): the temporal embedding is set to "
            "zeros, which reproduces that variant exactly for images; video needs fine-tuning."
        )
    for reason in sorted(set(out.dropped.values())):
        keys = [key for key, why in out.dropped.items() if why == reason]
        out.notes.append(f"Dropped {len(keys)} key(s): {reason}.")
    return out


def _drop(key: str, out: MappedStateDict) -> bool:
    for pattern, reason in DROP_RULES:
        if re.fullmatch(pattern, key):
            out.dropped[key] = reason
            return True
    return False


def _special(key: str, tensor: torch.Tensor, out: MappedStateDict) -> bool:
    for pattern, handler in SPECIAL_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            handler(match, tensor, out, key)
            return True
    return False


_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")  # a layer index between dots


def compact_keys(keys, limit: int = 40) -> str:
    """Keys for an error message, layer indices folded: `layers.{0..5}.ln.weight` stands for six keys."""
    groups: dict[str, list[tuple[str, ...]]] = {}
    for key in sorted(set(keys)):
        groups.setdefault(_INDEX.sub("{}", key), []).append(tuple(_INDEX.findall(key)))
    parts = []
    for pattern, indices in groups.items():
        if len(indices) == 1:
            parts.append(pattern.format(*indices[0]))
            continue
        ranges = []
        for values in zip(*indices):
            numbers = sorted({int(v) for v in values})
            contiguous = numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2
            inner = f"{numbers[0]}..{numbers[-1]}" if contiguous else ",".join(map(str, numbers))
            ranges.append("{" + inner + "}")
        parts.append(pattern.format(*ranges))
    shown = parts[:limit] + ([f"... and {len(parts) - limit} more"] if len(parts) > limit else [])
    return ", ".join(shown)


def head_of(target_key: str) -> str | None:
    """The head a converted key belongs to (`"VQA classifier"`, …), or `None` for backbone keys."""
    for prefix, name in HEAD_PREFIXES.items():
        if target_key.startswith(prefix):
            return name
    return None


__all__ = ["CheckpointKeyError", "MappedStateDict", "compact_keys", "head_of", "map_state_dict"]
