"""Convert an original SCL checkpoint (IIGROUP/SCL, e.g. `MGSC-100k.ckpt` from the Hub repo `jiyatai/SCL`) into a
transformers-scl model folder: `model.safetensors`, `config.json`, the processor files and a model card.

    scl-convert-original MGSC-100k.ckpt ./scl-base --tokenizer roberta-base

The architecture is read from the tensor shapes and the training config stored in the checkpoint
(`hyper_parameters['config']`, spec §6.3); every key is mapped by `key_mapping` or dropped by a named rule, and any
other mismatch is an error listing the keys (nothing is written half-way). The result is reloaded with
`AutoModel.from_pretrained` and run once before the summary is printed.
"""

import argparse
import json
import math
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer
from transformers.initialization import no_init_weights
from transformers.utils import logging

from .. import modeling_scl
from ..configuration_scl import PRETRAINING_OBJECTIVES, SCLConfig
from ..hub import AUTO_MAP_CLASSES, ensure_remote_code, push_folder_to_hub, write_model_card
from ..modeling_scl import resize_position_embedding
from ..processing_scl import SCLProcessor
from .key_mapping import CheckpointKeyError, compact_keys, head_of, map_state_dict
from .original_checkpoint import OriginalCheckpoint, UntrustedCheckpointError, load_original_checkpoint

logger = logging.get_logger(__name__)

# --task → model class name in modeling_scl.
TASK_CLASSES = {
    "model": "SCLModel",
    "pretraining": "SCLForPreTraining",
    "vqa": "SCLForQuestionAnswering",
    "nlvr2": "SCLForImagesAndTextClassification",
    "retrieval": "SCLForImageTextRetrieval",
    "zero-shot": "SCLForZeroShotImageClassification",
}

# roberta-base values that the weights cannot tell (spec §1.3).
ROBERTA_BASE_DEFAULTS = dict(
    model_type="roberta",
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

# spec §2: loss_names entries (value >= 1 switches a loss on) → our pretraining objectives. `mgsc` is GLSCL's name
# for the same global completion contrast (spec §2.5, §6.1).
LOSS_NAME_OBJECTIVES = {
    "mlm": ("mlm",),
    "itm": ("itm",),
    "con": ("itc",),
    "scl": ("mvsc", "mlsc"),
    "mgsc": ("mvsc", "mlsc"),
}


@dataclass
class ConversionResult:
    """What a conversion produced: the output folder, the model and the facts for the summary and the model card."""

    output_dir: str
    task: str
    model: Any
    config: SCLConfig
    num_converted: int
    dropped: dict[str, str]
    notes: list[str] = field(default_factory=list)
    verification: list[str] = field(default_factory=list)
    checkpoint_metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        config = self.config
        vision, text = config.vision_config, config.text_config
        params = sum(p.numel() for p in self.model.parameters())
        lines = [
            f"Converted to {self.output_dir} as {type(self.model).__name__} (task {self.task!r}, {params / 1e6:.1f}M parameters)",
            f"  vision: {vision.num_hidden_layers} blocks, width {vision.hidden_size}, patch {vision.patch_size}, "
            f"image {config.image_size}px, max_frames {vision.max_frames}",
            f"  text: {text.num_hidden_layers} layers, width {text.hidden_size}, vocabulary {text.vocab_size}",
            f"  fusion: {config.num_fusion_layers}+{config.num_fusion_layers} layers, width {config.hidden_size}, "
            f"{config.num_token_types} token types",
            f"  objectives: {', '.join(config.pretraining_objectives)}",
            f"  tensors written: {self.num_converted}; source keys dropped: {len(self.dropped)}",
        ]
        if self.checkpoint_metadata:
            lines.append(f"  checkpoint: {', '.join(f'{k}={v}' for k, v in self.checkpoint_metadata.items())}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  verified: {check}" for check in self.verification]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Architecture from shapes and the training config
# ---------------------------------------------------------------------------------------------------------------------


def detect_task(state_dict: dict[str, torch.Tensor]) -> str:
    """The model class the heads of a checkpoint belong to: a fine-tuned head wins over the pre-training heads."""
    prefixes = {"vqa": "vqa_classifier.", "nlvr2": "nlvr2_classifier.", "retrieval": "rank_output."}
    for task, prefix in prefixes.items():
        if any(key.startswith(prefix) for key in state_dict):
            return task
    if any(key.startswith(("mlm_score.", "itm_score.", "language_proj.", "vision_proj.")) for key in state_dict):
        return "pretraining"
    return "model"


def _count(state_dict: dict, pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    if indices and indices != set(range(len(indices))):
        raise ValueError(f"Layer indices of {pattern!r} are not contiguous from 0: {sorted(indices)}.")
    return len(indices)


def _shape(state_dict: dict, key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointKeyError(f"The checkpoint has no {key!r}, which every SCL checkpoint has (spec §6.2).")
    return tuple(state_dict[key].shape)


def _heads(width: int, override: int | None, what: str, why: str) -> int:
    if override is not None:
        return override
    if width % 64:
        raise ValueError(
            f"Cannot infer the {what} head count: width {width} is not a multiple of 64 ({why}). Pass it explicitly."
        )
    return width // 64


def infer_config(
    checkpoint: OriginalCheckpoint,
    image_size: int | None = None,
    text_num_attention_heads: int | None = None,
    vision_num_attention_heads: int | None = None,
    label_names: list[str] | None = None,
) -> tuple[SCLConfig, list[str]]:
    """Build the `SCLConfig` of a checkpoint: sizes from the tensor shapes, training facts from its config.

    Returns the config and notes for the user (values the weights and the training config disagree on, settings
    carried over or not). `image_size` asks for position embeddings resized to that resolution.
    """
    state = checkpoint.state_dict
    training = checkpoint.training_config or {}
    notes: list[str] = []

    vocab_size, text_width = _shape(state, "text_transformer.embeddings.word_embeddings.weight")
    text_config = dict(
        ROBERTA_BASE_DEFAULTS,
        vocab_size=vocab_size,
        hidden_size=text_width,
        num_hidden_layers=_count(state, r"text_transformer\.encoder\.layer\.(\d+)\."),
        num_attention_heads=_heads(text_width, text_num_attention_heads, "text", "roberta-base has 64-wide heads"),
        intermediate_size=_shape(state, "text_transformer.encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=_shape(state, "text_transformer.embeddings.position_embeddings.weight")[0],
        type_vocab_size=_shape(state, "text_transformer.embeddings.token_type_embeddings.weight")[0],
    )

    vision_width, channels, patch_size, _ = _shape(state, "vision_transformer.visual.conv1.weight")
    positions = _shape(state, "vision_transformer.visual.positional_embedding")[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ValueError(f"positional_embedding has {positions} rows, not 1 + a square grid.")
    stored_size = grid * patch_size
    target_size = image_size or stored_size
    if target_size % patch_size:
        raise ValueError(f"--image-size {target_size} is not a multiple of the patch size {patch_size}.")
    temporal = state.get("vision_transformer.visual.temporal_embed")
    vision_config = dict(
        hidden_size=vision_width,
        intermediate_size=_shape(state, "vision_transformer.visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
        num_hidden_layers=_count(state, r"vision_transformer\.visual\.transformer\.resblocks\.(\d+)\."),
        # spec §7.2 item 13: the reference hard-codes width // 64 heads.
        num_attention_heads=_heads(
            vision_width, vision_num_attention_heads, "vision", "the reference uses width // 64"
        ),
        num_channels=channels,
        image_size=target_size,
        patch_size=patch_size,
        max_frames=temporal.shape[-2] if temporal is not None else 8,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )

    hidden_size = _shape(state, "cross_modal_text_transform.weight")[0]
    num_fusion_layers = _count(state, r"cross_modal_text_layers\.(\d+)\.")
    intermediate_size = _shape(state, "cross_modal_text_layers.0.intermediate.dense.weight")[0]
    kwargs: dict[str, Any] = dict(
        text_config=text_config,
        vision_config=vision_config,
        hidden_size=hidden_size,
        num_fusion_layers=num_fusion_layers,
        intermediate_size=intermediate_size,
        num_attention_heads=_heads(hidden_size, training.get("num_heads"), "fusion", "no `num_heads` in the config"),
        num_token_types=_shape(state, "token_type_embeddings.weight")[0],
        image_size=target_size,
    )
    if "language_proj.3.weight" in state:
        kwargs["itc_projection_dim"] = state["language_proj.3.weight"].shape[0]

    # Cross-check the training config against the weights; the weights win.
    expected = {
        "hidden_size": hidden_size,
        "num_top_layer": num_fusion_layers,
        "vocab_size": vocab_size,
        "image_size": stored_size,
        "patch_size": patch_size,
    }
    if "mlp_ratio" in training:
        expected["mlp_ratio"] = intermediate_size / hidden_size
    for name, value in expected.items():
        if name in training and training[name] != value:
            notes.append(
                f"training config has {name}={training[name]!r} but the weights say {value!r}; using the weights."
            )
    kwargs.update(_training_settings(training, vision_config["max_frames"], notes))

    for head, prefix in (("vqa", "vqa_classifier.3.weight"), ("nlvr2", "nlvr2_classifier.3.weight")):
        if prefix in state:
            num_labels = state[prefix].shape[0]
            if head == "vqa" and training.get("vqav2_label_size", num_labels) != num_labels:
                notes.append(
                    f"vqav2_label_size={training['vqav2_label_size']} but the VQA head has {num_labels} rows."
                )
            kwargs["id2label"] = _labels(head, num_labels, label_names, notes)
    if image_size and image_size != stored_size:
        notes.append(
            f"Position embeddings resized bicubically from {stored_size}px ({grid}x{grid}) to {image_size}px."
        )
    return SCLConfig(**kwargs), notes


def _training_settings(training: dict, max_frames: int, notes: list[str]) -> dict:
    """SCLConfig values carried over from the reference's training config (spec §6.3)."""
    settings: dict[str, Any] = {}
    if "num_frames" in training:
        settings["num_frames"] = min(int(training["num_frames"]), max_frames)
    # spec §1.1, §6.3: both fusion dropouts are 0.1 = drop_rate (METER passes drop_rate to both, spec §8).
    if "drop_rate" in training:
        settings["hidden_dropout_prob"] = settings["attention_probs_dropout_prob"] = float(training["drop_rate"])
    if "con_weight" in training:
        settings["itc_weight"] = float(training["con_weight"])
    if "mlm_prob" in training:
        settings["mlm_probability"] = float(training["mlm_prob"])

    loss_names = training.get("loss_names")
    if isinstance(loss_names, dict):
        on = [name for name, value in loss_names.items() if isinstance(value, int | float) and value >= 1]
        objectives = [o for name in on for o in LOSS_NAME_OBJECTIVES.get(name, ())]
        if objectives:
            settings["pretraining_objectives"] = [o for o in PRETRAINING_OBJECTIVES if o in objectives]
        if "mltc" in on:
            # spec §2.5: MLTC is GLSCL's local token-level objective.
            notes.append("GLSCL's MLTC objective was on in training; transformers-scl does not implement it.")
        if {"scl", "mgsc"} & set(on):  # the masking ratios are read only when semantic completion was trained
            if "mask_ratio" in training:
                settings["image_mask_ratio"] = float(training["mask_ratio"])
            if "mtm_ratio" in training:
                settings["text_mask_ratio"] = float(training["mtm_ratio"])
    max_text_len = training.get("max_text_len")
    if max_text_len is not None and max_text_len != SCLProcessor.text_kwargs["max_length"]:
        notes.append(
            f"Trained with max_text_len={max_text_len}; the processor pads to "
            f"{SCLProcessor.text_kwargs['max_length']} unless called with max_length={max_text_len}."
        )
    return settings


def _labels(head: str, num_labels: int, label_names: list[str] | None, notes: list[str]) -> dict[int, str]:
    if label_names is not None:
        if len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label names given but the {head} head has {num_labels} outputs.")
        return dict(enumerate(label_names))
    if head == "nlvr2":
        return {0: "False", 1: "True"}
    notes.append(
        f"The checkpoint does not store the {num_labels} VQA answers; pass --label-names (a JSON list of the answer "
        "vocabulary in classifier order) to name them."
    )
    return {i: f"LABEL_{i}" for i in range(num_labels)}


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------


def model_class_for(task: str) -> type:
    if task not in TASK_CLASSES:
        raise ValueError(f"Unknown task {task!r}; choose from {sorted(TASK_CLASSES)}.")
    name = TASK_CLASSES[task]
    model_class = getattr(modeling_scl, name, None)
    if model_class is None:
        raise NotImplementedError(f"Task {task!r} needs {name}, which this version of transformers-scl lacks.")
    return model_class


def convert_state_dict(
    checkpoint: OriginalCheckpoint, model_class: type, config: SCLConfig, image_size: int | None = None
) -> tuple[Any, dict[str, str], list[str]]:
    """Map the checkpoint onto a fresh `model_class(config)` and load it strictly.

    Returns the model, the dropped source keys with their reasons, and notes. Raises `CheckpointKeyError` listing
    every key that is left over, missing or of the wrong shape.
    """
    mapped = map_state_dict(checkpoint.state_dict)
    tensors = mapped.tensors
    notes = list(mapped.notes)
    position_key = "scl.vision_model.embeddings.position_embedding.weight"
    new_grid = config.vision_config.image_size // config.vision_config.patch_size
    if image_size and tensors[position_key].shape[0] != new_grid * new_grid + 1:
        tensors[position_key] = resize_position_embedding(tensors[position_key], new_grid)
    temporal_key = "scl.vision_model.embeddings.temporal_embedding"
    if temporal_key not in tensors:
        vision = config.vision_config
        tensors[temporal_key] = torch.zeros(vision.max_frames, vision.hidden_size, dtype=tensors[position_key].dtype)

    with no_init_weights():
        model = model_class(config)
    if model.base_model is model:  # the base model itself: its keys have no `scl.` prefix
        prefix = f"{model.base_model_prefix}."
        mapped.sources = {key.removeprefix(prefix): source for key, source in mapped.sources.items()}
        tensors = {key.removeprefix(prefix): tensor for key, tensor in tensors.items()}
    expected = model.state_dict()
    dropped = dict(mapped.dropped)
    absent_heads: dict[str, list[str]] = {}
    for key in [key for key in tensors if key not in expected]:
        head = head_of(key)
        if head is not None and not any(head_of(k) == head for k in expected):
            absent_heads.setdefault(head, []).append(key)
            dropped[mapped.sources[key]] = f"{head}, not part of {model_class.__name__}"
            del tensors[key]
    for head, keys in absent_heads.items():
        notes.append(f"Dropped the {head} ({len(keys)} tensors): {model_class.__name__} has no such head.")

    unexpected = [mapped.sources[key] for key in tensors if key not in expected]
    missing = [key for key in expected if key not in tensors]
    mismatched = sorted(
        f"{mapped.sources.get(key, key)} {tuple(tensors[key].shape)} -> {key} {tuple(expected[key].shape)}"
        for key in tensors
        if key in expected and tensors[key].shape != expected[key].shape
    )
    problems = []
    name = model_class.__name__
    if unexpected:
        problems.append(
            f"{len(set(unexpected))} checkpoint key(s) have no place in {name}: {compact_keys(unexpected)}"
        )
    if missing:
        problems.append(f"{len(missing)} weight(s) of {name} are not in the checkpoint: {compact_keys(missing)}")
        if all(head_of(key) for key in missing):
            problems.append(
                f"the checkpoint lacks a head of {name}: convert it for the heads it has (the default --task) and load "
                f"that folder with {name}.from_pretrained(...) to start the missing head fresh"
            )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {', '.join(mismatched)}")
    if problems:
        raise CheckpointKeyError("Conversion stopped, nothing was written. " + " | ".join(problems))
    model.load_state_dict(tensors, strict=True)
    return model, dropped, notes


def build_processor(tokenizer: str, config: SCLConfig) -> SCLProcessor:
    """A processor for the converted model: the RoBERTa tokenizer, square resize to the model's image size."""
    text_tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if len(text_tokenizer) > config.text_config.vocab_size:
        raise ValueError(
            f"The tokenizer {tokenizer!r} has {len(text_tokenizer)} tokens but the model's vocabulary is "
            f"{config.text_config.vocab_size}."
        )
    return SCLProcessor.from_config(text_tokenizer, config)


def check_output_dir(output_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an output path that is a file, or a non-empty folder unless `overwrite` (checked before any reading)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"The output path {output_dir} is a file, not a folder.")
    if path.is_dir() and not overwrite:
        entries = sorted(entry.name for entry in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
            raise FileExistsError(
                f"The output folder {output_dir} is not empty ({len(entries)} entries: {shown}). Pass --overwrite "
                "(`overwrite=True`) to write into it, or choose a new folder."
            )


def convert_original_checkpoint(
    checkpoint_path: str,
    output_dir: str,
    *,
    task: str | None = None,
    image_size: int | None = None,
    tokenizer: str = "roberta-base",
    trust_pickle: bool = False,
    text_num_attention_heads: int | None = None,
    vision_num_attention_heads: int | None = None,
    label_names: list[str] | None = None,
    verify: bool = True,
    model_card: bool = True,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert an original SCL checkpoint into a transformers-scl folder (weights, config, processor, card).

    Args:
        checkpoint_path: Lightning `.ckpt` or plain state dict of the reference implementation.
        output_dir: Folder to write.
        task: One of `TASK_CLASSES`; detected from the heads present when `None`.
        image_size: Resize the position embeddings to this resolution (default: the checkpoint's own).
        tokenizer: Tokenizer name or folder for the processor (the reference uses `roberta-base`).
        trust_pickle: Allow pickled Python objects in the file (only for a file you trust).
        text_num_attention_heads / vision_num_attention_heads: Head counts, if not width // 64.
        label_names: Names of the classifier outputs (e.g. the VQA answer vocabulary, in classifier order).
        verify: Reload the folder with `AutoModel` and the task class, compare every tensor and run a forward pass.
        model_card: Write a README.md model card.
        repo_id: Hub repository id to show in the model card's loading example.
        overwrite: Allow writing into a non-empty `output_dir` (files of the same name are replaced).
    """
    check_output_dir(output_dir, overwrite)
    checkpoint = load_original_checkpoint(checkpoint_path, trust_pickle=trust_pickle)
    task = task or detect_task(checkpoint.state_dict)
    model_class = model_class_for(task)
    config, notes = infer_config(
        checkpoint, image_size, text_num_attention_heads, vision_num_attention_heads, label_names
    )
    model, dropped, mapping_notes = convert_state_dict(checkpoint, model_class, config, image_size)
    processor = build_processor(tokenizer, config)

    result = ConversionResult(
        output_dir=str(output_dir),
        task=task,
        model=model,
        config=config,
        num_converted=len(model.state_dict()),
        dropped=dropped,
        notes=notes + mapping_notes,
        checkpoint_metadata=dict(checkpoint.metadata),
    )
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    ensure_remote_code(output_dir, model)
    processor.save_pretrained(output_dir)
    for note in result.notes:
        logger.info(f"scl-convert-original: {note}")
    if model_card:
        try:
            write_model_card(
                output_dir,
                model,
                repo_id=repo_id or "path/to/this/model",
                source_checkpoint=Path(checkpoint_path).name,
                training_config=checkpoint.training_config,
                checkpoint_metadata=checkpoint.metadata,
                conversion_notes=result.notes,
            )
        except FileNotFoundError as error:  # an install without the card template: the weights are still fine
            result.notes.append(f"No model card written: {error}")
    if verify:
        result.verification = verify_conversion(output_dir, model, task)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------------------


def _auto_class_for(model_class: type):
    import transformers

    for auto_name, registered in AUTO_MAP_CLASSES.items():
        if registered is model_class:
            return getattr(transformers, auto_name)
    return None


def _example_inputs(processor, config: SCLConfig) -> dict:
    size = config.image_size
    ramp = np.linspace(0, 255, size * size * 3).reshape(size, size, 3).astype(np.uint8)
    images = [PIL.Image.fromarray(ramp), PIL.Image.fromarray(ramp[::-1].copy())]
    return processor(images=images, text=["a photo of a cat", "two dogs"], return_tensors="pt")


def _task_output(model, inputs) -> torch.Tensor:
    """One deterministic forward of a task model on a batch of two (image, text) pairs: its loss or logits."""
    name = type(model).__name__
    if name == "SCLForPreTraining":
        ids = inputs["input_ids"]
        mlm_labels = torch.full_like(ids, -100)
        mlm_labels[:, 1] = ids[:, 1]
        vision = model.config.vision_config
        num_patches = (model.config.image_size // vision.patch_size) ** 2
        keep = max(1, int(num_patches * (1 - model.config.image_mask_ratio)))
        return model(
            **inputs,
            mlm_input_ids=ids,
            mlm_labels=mlm_labels,
            mlsc_input_ids=ids,
            itm_labels=torch.tensor([1, 0]),
            itm_negative_indices=torch.tensor([1, 0]),
            patch_keep_indices=torch.arange(keep).expand(ids.shape[0], -1),
        ).loss
    if name == "SCLForImagesAndTextClassification":
        pixels = inputs["pixel_values"]
        pair = torch.stack([pixels, pixels.flip(0)], dim=1)
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pair).logits
    if name == "SCLForImageTextRetrieval":
        return model(**inputs, negative_text_indices=torch.tensor([[1], [0]]), return_loss=True).loss
    if name == "SCLForZeroShotImageClassification":
        return model(**inputs).logits_per_image
    return model(**inputs).logits


def _assert_same_weights(reference: dict, loaded: dict, what: str):
    if reference.keys() != loaded.keys():
        raise AssertionError(f"{what}: reloaded keys differ: {sorted(reference.keys() ^ loaded.keys())[:10]}")
    different = [key for key in reference if not torch.equal(reference[key], loaded[key])]
    if different:
        raise AssertionError(f"{what}: {len(different)} reloaded tensor(s) differ, e.g. {different[:5]}")


@contextmanager
def _quiet_transformers():
    # Reloading a task folder as the base model prints a load report of the unused heads; it is expected here.
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def verify_conversion(output_dir: str, model, task: str) -> list[str]:
    """Reload `output_dir` through the Auto classes, check every tensor and the forward pass; return what passed."""
    with _quiet_transformers():
        return _verify(output_dir, model, task)


def _verify(output_dir: str, model, task: str) -> list[str]:
    checks = []
    processor = AutoProcessor.from_pretrained(output_dir)  # the local classes, registered by `transformers_scl`
    inputs = _example_inputs(processor, model.config)
    checks.append(f"AutoProcessor reloads {type(processor).__name__}")

    base = AutoModel.from_pretrained(output_dir).eval()
    source_base = model if task == "model" else model.scl
    model.eval()
    if source_base.fusion is None:
        # A zero-shot folder holds the towers without the fusion layers: AutoModel loads them and starts the fusion
        # fresh, so only the towers can be compared.
        towers = {key: tensor for key, tensor in base.state_dict().items() if key in source_base.state_dict()}
        _assert_same_weights(source_base.state_dict(), towers, "AutoModel")
        checks.append(f"AutoModel loads {type(base).__name__}; the towers' tensors equal (no fusion layers saved)")
        return checks + _verify_task(output_dir, model, inputs)
    _assert_same_weights(source_base.state_dict(), base.state_dict(), "AutoModel")
    with torch.no_grad():
        expected = source_base(**inputs).pooler_output
        output = base(**inputs).pooler_output
    if not torch.equal(expected, output) or not torch.isfinite(output).all():
        raise AssertionError("AutoModel forward differs from the converted model's or is not finite.")
    checks.append(
        f"AutoModel loads {type(base).__name__}; all tensors equal; forward pooler_output {tuple(output.shape)}"
    )
    return checks + (_verify_task(output_dir, model, inputs) if task != "model" else [])


def _verify_task(output_dir: str, model, inputs) -> list[str]:
    """Reload the task folder with its Auto class (or its class) and compare every tensor and the task output."""
    auto_class = _auto_class_for(type(model))
    # Without a local registration an Auto class would fall back to the folder's remote code.
    registered = auto_class is not None and type(model.config) in auto_class._model_mapping
    loader = auto_class if registered else type(model)
    reloaded = loader.from_pretrained(output_dir).eval()
    if type(reloaded) is not type(model):
        raise AssertionError(f"{loader.__name__} loaded {type(reloaded).__name__}, not {type(model).__name__}.")
    _assert_same_weights(model.state_dict(), reloaded.state_dict(), loader.__name__)
    with torch.no_grad():
        expected, output = _task_output(model, inputs), _task_output(reloaded, inputs)
    if not torch.equal(expected, output) or not torch.isfinite(output).all():
        raise AssertionError(f"{loader.__name__} forward differs from the converted model's or is not finite.")
    return [f"{loader.__name__} loads {type(reloaded).__name__}; all tensors equal; task forward runs"]


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scl-convert-original",
        description="Convert an original SCL checkpoint (IIGROUP/SCL, e.g. MGSC-100k.ckpt from jiyatai/SCL) into a "
        "transformers-scl model folder.",
    )
    parser.add_argument("checkpoint", help="Lightning .ckpt or plain state dict of the reference implementation")
    parser.add_argument("output_dir", help="folder to write (safetensors weights, config, processor, model card)")
    parser.add_argument("--task", choices=sorted(TASK_CLASSES), help="model class to write (default: from the heads)")
    parser.add_argument("--image-size", type=int, help="resize the position embeddings to this resolution")
    parser.add_argument("--tokenizer", default="roberta-base", help="tokenizer name or folder (default roberta-base)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickled Python objects in the checkpoint; unpickling can run code, so only for a file you trust",
    )
    parser.add_argument("--text-num-heads", type=int, help="text tower heads (default: width // 64)")
    parser.add_argument("--vision-num-heads", type=int, help="vision tower heads (default: width // 64)")
    parser.add_argument("--label-names", help="JSON file: list of classifier output names (e.g. VQA answers)")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into OUTPUT_DIR even if it is not empty (replacing files)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reloading and running the converted model")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the converted folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    label_names = None
    if args.label_names:
        label_names = json.loads(Path(args.label_names).read_text())
        if isinstance(label_names, dict):  # {"0": "yes", ...}
            label_names = [label_names[key] for key in sorted(label_names, key=int)]
    try:
        result = convert_original_checkpoint(
            args.checkpoint,
            args.output_dir,
            task=args.task,
            image_size=args.image_size,
            tokenizer=args.tokenizer,
            trust_pickle=args.trust_pickle,
            text_num_attention_heads=args.text_num_heads,
            vision_num_attention_heads=args.vision_num_heads,
            label_names=label_names,
            verify=not args.no_verify,
            repo_id=args.push_to_hub,
            overwrite=args.overwrite,
        )
    except (
        CheckpointKeyError,
        UntrustedCheckpointError,
        ValueError,  # CheckpointFileError included
        FileNotFoundError,
        FileExistsError,
        NotImplementedError,
    ) as error:
        print(f"scl-convert-original: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    if args.push_to_hub:
        url = push_folder_to_hub(args.output_dir, args.push_to_hub, private=args.private or None)
        print(f"Pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
