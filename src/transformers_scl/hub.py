"""Publishing SCL models: remote-code packaging, a generated model card and a one-commit push of model, processor
and card.

`register_remote_code` (run on `import transformers_scl`) makes every SCL model's `save_pretrained`, and so
`push_to_hub`, `Trainer.save_model` and the converter, write a folder that loads without the package: the modeling
code, an `auto_map` naming every SCL Auto class, and for the VQA head the `custom_pipelines` entry and the pipeline
code, so `Auto*.from_pretrained(folder, trust_remote_code=True)` and
`pipeline("visual-question-answering", model=folder, trust_remote_code=True)` work without installing
transformers-scl. `push_to_hub` here adds the processor and the card to the same commit.

The card is rendered from `MODEL_CARD.md` (the card of the converted SCL base checkpoint): its YAML front matter is
regenerated, and each `<!-- scl:begin NAME -->…<!-- scl:end NAME -->` region is replaced by the facts of the run.
"""

import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCardData
from transformers import AutoModelForVisualQuestionAnswering, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.base import PipelineRegistry

from . import modeling_scl
from .configuration_scl import SCLConfig
from .pipelines import SCLVisualQuestionAnsweringPipeline

CARD_TEMPLATE = "MODEL_CARD.md"
ORIGINAL_REPO = "jiyatai/SCL"
RELEASED_CHECKPOINTS = ("MGSC-100k.ckpt", "GLSCL-100k.ckpt")  # spec §6.1
# spec §4: the "4M images" pre-training corpus.
PRETRAINING_DATASETS = ["coco", "visual_genome", "conceptual_captions", "sbu_captions"]

# Model class → (pipeline tag, metrics, extra fine-tuning datasets) for the card metadata.
TASK_METADATA: dict[str, tuple[str | None, list[str], list[str]]] = {
    "SCLModel": ("feature-extraction", [], []),
    "SCLForPreTraining": ("feature-extraction", [], []),
    "SCLForQuestionAnswering": ("visual-question-answering", ["accuracy"], ["vqav2"]),
    "SCLForImagesAndTextClassification": (None, ["accuracy"], ["nlvr2"]),
    "SCLForImageTextRetrieval": (None, ["recall"], []),
    "SCLForZeroShotImageClassification": ("zero-shot-image-classification", [], []),
}

_REGION = re.compile(r"<!-- scl:begin (?P<name>[\w-]+) -->\n.*?<!-- scl:end (?P=name) -->", re.DOTALL)
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)

# Keys of the reference's training config worth showing on a card (spec §6.3), in this order.
TRAINING_CONFIG_KEYS = (
    "exp_name",
    "datasets",
    "loss_names",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_steps",
    "max_steps",
    "max_epoch",
    "image_size",
    "max_text_len",
    "num_frames",
    "con_weight",
    "mask_ratio",
    "mtm_ratio",
    "precision",
    "seed",
)


# ---------------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------------


def _template_path() -> Path:
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / CARD_TEMPLATE, package_dir.parents[1] / CARD_TEMPLATE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Cannot find the model card template {CARD_TEMPLATE} next to the package or at the repository root; pass "
        "`template=` (its text)."
    )


def _auto_class_name(model_class: type) -> str | None:
    for auto_name, registered in AUTO_MAP_CLASSES.items():
        if registered is model_class:
            return auto_name
    return None


def card_metadata(
    model,
    *,
    base_model: str | list[str] | None = ORIGINAL_REPO,
    datasets: list[str] | None = None,
    license: str = "other",
    license_name: str | None = "unknown",
    tags: Iterable[str] = (),
) -> ModelCardData:
    """The card's YAML metadata for `model`: library, pipeline tag, datasets, metrics, license, base model, tags.

    The original weights come without a licence (the IIGROUP/SCL repository has no LICENSE file, spec header), so the
    default is `license: other` / `license_name: unknown`; set the real one if you know it.
    """
    name = type(model).__name__
    pipeline_tag, metrics, task_datasets = TASK_METADATA.get(name, (None, [], []))
    all_tags = ["scl", "vision-language", "multimodal", "image-text", "video-text", "custom_code", *tags]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        license_name=license_name if license == "other" else None,
        datasets=datasets if datasets is not None else PRETRAINING_DATASETS + task_datasets,
        metrics=metrics or None,
        base_model=base_model,
        tags=list(dict.fromkeys(all_tags)),
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _facts(model, source_checkpoint, training_config, checkpoint_metadata, training_facts) -> str:
    config = model.config
    vision, text = config.vision_config, config.text_config
    name = type(model).__name__
    auto = _auto_class_name(type(model))
    params = sum(p.numel() for p in model.parameters())
    grid = config.image_size // vision.patch_size
    rows = [
        ("Model class", f"`{name}`" + (f" (loads with `{auto}`)" if auto else "")),
        ("Parameters", f"{params / 1e6:.1f}M"),
        (
            "Vision tower",
            f"CLIP ViT: {vision.num_hidden_layers} blocks, width {vision.hidden_size}, {vision.num_attention_heads} "
            f"heads, patch {vision.patch_size}, {config.image_size}×{config.image_size} input ({grid}×{grid} "
            f"patches), up to {vision.max_frames} frames",
        ),
        (
            "Text tower",
            f"RoBERTa: {text.num_hidden_layers} layers, width {text.hidden_size}, vocabulary {text.vocab_size:,}",
        ),
        (
            "Fusion",
            f"{config.num_fusion_layers} + {config.num_fusion_layers} co-attention layers, width {config.hidden_size}, "
            f"{config.num_attention_heads} heads, {config.num_token_types} token types",
        ),
        ("Frames per video (default)", str(config.num_frames)),
    ]
    if name in ("SCLModel", "SCLForPreTraining"):
        objectives = ", ".join(
            f"{o.upper()} (weight {_fmt(getattr(config, f'{o}_weight'))})" for o in config.pretraining_objectives
        )
        rows += [
            ("Pre-training objectives", objectives),
            (
                "Semantic completion",
                f"{config.image_mask_ratio:.0%} of patches dropped, {config.text_mask_ratio:.0%} of tokens masked, "
                f"τ = {_fmt(config.scl_temperature)}",
            ),
        ]
    temperature = getattr(model, "itc_temperature", None)
    if temperature is not None:
        rows.append(("ITC temperature (learned)", f"{float(temperature.detach()):.4f}"))
    if name in ("SCLForQuestionAnswering", "SCLForImagesAndTextClassification"):
        rows.append(("Classes", f"{config.num_labels}"))
    if source_checkpoint:
        meta = ", ".join(f"{k} {v}" for k, v in (checkpoint_metadata or {}).items())
        rows.append(("Converted from", f"`{source_checkpoint}`" + (f" ({meta})" if meta else "")))
    for key, value in (training_facts or {}).items():
        rows.append((str(key), _fmt(value)))
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if training_config:
        shown = [(k, training_config[k]) for k in TRAINING_CONFIG_KEYS if k in training_config]
        if shown:
            lines += ["", "Original training configuration (from the checkpoint):", "", "| key | value |", "|---|---|"]
            lines += [f"| `{k}` | `{_fmt(v)}` |" for k, v in shown]
    return "\n".join(lines)


def _usage(model, repo_id: str) -> str:
    name = type(model).__name__
    auto = _auto_class_name(type(model))
    if auto:
        load = (
            f"from transformers import {auto}, AutoProcessor\n\n"
            f'model = {auto}.from_pretrained("{repo_id}", trust_remote_code=True)'
        )
    else:  # no Auto class for this head: use the package
        load = (
            f"from transformers import AutoProcessor\nfrom transformers_scl import {name}  # pip install transformers-scl\n\n"
            f'model = {name}.from_pretrained("{repo_id}")'
        )
    fused = "model(**inputs)" if name == "SCLModel" else "model.scl(**inputs)"
    return (
        "```python\nfrom PIL import Image\n"
        + load
        + f'\nprocessor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n\n'
        + 'inputs = processor(images=Image.open("cat.jpg"), text="a cat on a sofa", return_tensors="pt")\n'
        + f"fused = {fused}  # text_features, image_features, pooler_output (batch, 2 × hidden)\n```"
        + "".join(
            f"\n\nOr as a pipeline:\n\n```python\nfrom transformers import pipeline\n\n"
            f'pipe = pipeline("{task}", model="{repo_id}", trust_remote_code=True)\n```'
            for task in custom_pipelines(type(model))
        )
    )


def _intro(model, source_checkpoint: str | None) -> str:
    name = type(model).__name__
    if not source_checkpoint:
        return f"This repository holds an SCL model (`{name}`) saved with transformers-scl."
    origin = ""
    if source_checkpoint in RELEASED_CHECKPOINTS:
        origin = f" (Hub repo [`{ORIGINAL_REPO}`](https://huggingface.co/{ORIGINAL_REPO}))"
    return (
        f"This repository holds the original SCL checkpoint `{source_checkpoint}`{origin} converted to the "
        f"transformers-scl format (`{name}`): it loads with `from_pretrained` and trains with the transformers "
        "`Trainer`.\n\n> **Status of this conversion.** The converter's tests use synthetic checkpoints that follow "
        "the original key layout and shapes exactly. The paper's results below were not re-measured with these "
        "converted weights."
    )


def _conversion_notes(notes: Iterable[str], source_checkpoint: str | None) -> str:
    if not source_checkpoint:
        return "This model was not converted from an original checkpoint."
    notes = list(notes)
    if not notes:
        return "No conversion notes for this checkpoint."
    return "\n".join(f"- {note}" for note in notes)


def model_card(
    model,
    *,
    repo_id: str = "path/to/this/model",
    title: str | None = None,
    source_checkpoint: str | None = None,
    training_config: Mapping[str, Any] | None = None,
    checkpoint_metadata: Mapping[str, Any] | None = None,
    conversion_notes: Iterable[str] = (),
    training_facts: Mapping[str, Any] | None = None,
    template: str | None = None,
    **metadata,
) -> str:
    """Render the model card (README.md text) of `model`.

    Args:
        model: An SCL model; sizes, objectives and the class are read from it.
        repo_id: Repository id used in the loading example.
        title: Card title (default from the class and the source checkpoint).
        source_checkpoint: File name of the original checkpoint, for converted models.
        training_config: The reference's training config (`hyper_parameters['config']`), if known.
        checkpoint_metadata: e.g. `epoch`, `global_step` of the source checkpoint.
        conversion_notes: Notes from the converter (dropped keys, resized embeddings, …).
        training_facts: Further facts of your run (dataset, steps, batch size, results), shown in the facts table.
        template: Template text; default `MODEL_CARD.md`.
        **metadata: Passed to `card_metadata` (`base_model`, `datasets`, `license`, `license_name`, `tags`).
    """
    text = template if template is not None else _template_path().read_text(encoding="utf-8")
    if not _FRONT_MATTER.match(text):
        raise ValueError("The model card template must start with a YAML front matter block (--- … ---).")
    name = type(model).__name__
    if title is None:
        title = f"SCL ({name})" + (f", converted from `{source_checkpoint}`" if source_checkpoint else "")
    regions = {
        "title": f"# {title}",
        "intro": _intro(model, source_checkpoint),
        "facts": _facts(model, source_checkpoint, training_config, checkpoint_metadata, training_facts),
        "usage": _usage(model, repo_id),
        "conversion": _conversion_notes(conversion_notes, source_checkpoint),
    }
    found = {match["name"] for match in _REGION.finditer(text)}
    if found != regions.keys():
        raise ValueError(f"The template's scl regions are {sorted(found)}; expected {sorted(regions)}.")

    def fill(match: re.Match) -> str:
        name = match["name"]
        return f"<!-- scl:begin {name} -->\n{regions[name]}\n<!-- scl:end {name} -->"

    body = _REGION.sub(fill, _FRONT_MATTER.sub("", text, count=1))
    front_matter = card_metadata(model, **metadata).to_yaml()
    return f"---\n{front_matter}\n---\n{body}"


def write_model_card(save_dir: str | Path, model, **kwargs) -> Path:
    """Write `model_card(model, **kwargs)` to `save_dir/README.md` and return its path."""
    path = Path(save_dir) / "README.md"
    path.write_text(model_card(model, **kwargs), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Remote code
# ---------------------------------------------------------------------------------------------------------------------

# Auto class → the SCL model class it loads. Every folder that an SCL model saves maps all of them (and `AutoConfig`),
# so any Auto class loads any SCL folder with `trust_remote_code=True` (e.g. `AutoModel` the base of a VQA model).
AUTO_MAP_CLASSES: dict[str, type] = {
    "AutoModel": modeling_scl.SCLModel,
    "AutoModelForPreTraining": modeling_scl.SCLForPreTraining,
    "AutoModelForVisualQuestionAnswering": modeling_scl.SCLForQuestionAnswering,
    "AutoModelForZeroShotImageClassification": modeling_scl.SCLForZeroShotImageClassification,
}

# The package's pipelines, in a registry of its own: registering them in transformers' global `PIPELINE_REGISTRY`
# would change what `pipeline()` does for every other model. This one tells `Pipeline.save_pretrained` (through the
# `_registered_impl` it sets on the class) and `save_pretrained` below what to write into a config's
# `custom_pipelines`, the entry that `pipeline(task, model=folder, trust_remote_code=True)` reads.
PIPELINES = PipelineRegistry(supported_tasks={}, task_aliases={})
PIPELINES.register_pipeline(
    "visual-question-answering",
    pipeline_class=SCLVisualQuestionAnsweringPipeline,
    pt_model=AutoModelForVisualQuestionAnswering,
    type="multimodal",
)


def _reference(cls: type) -> str:
    """`module.Class`, as `auto_map` and `custom_pipelines` name the code saved beside the weights."""
    return f"{cls.__module__.split('.')[-1]}.{cls.__name__}"


def custom_pipelines(model_class: type) -> dict[str, dict]:
    """The `custom_pipelines` entries for a folder of `model_class`: each package pipeline whose Auto class loads it."""
    entries = {}
    for task, info in PIPELINES.to_dict().items():
        if any(AUTO_MAP_CLASSES.get(auto_class.__name__) is model_class for auto_class in info["pt"]):
            entries[task] = {
                "impl": _reference(info["impl"]),
                "pt": [auto_class.__name__ for auto_class in info["pt"]],
                "type": info["type"],
            }
    return entries


def prepare_config_for_remote_code(model) -> None:
    """Complete `model.config`'s `auto_map` and set its `custom_pipelines` (the composite SCL config only)."""
    config = model.config
    if not isinstance(config, SCLConfig):  # e.g. `SCLVisionModel` saves an `SCLVisionConfig`: only its code
        return
    config.auto_map = {
        **(getattr(config, "auto_map", None) or {}),
        "AutoConfig": _reference(SCLConfig),
        **{auto_class: _reference(model_class) for auto_class, model_class in AUTO_MAP_CLASSES.items()},
    }
    # Another head's entries (a base model saved from a VQA model's config) would load the wrong class.
    pipelines = {
        task: entry
        for task, entry in (getattr(config, "custom_pipelines", None) or {}).items()
        if task not in PIPELINES.supported_tasks
    }
    pipelines.update(custom_pipelines(type(model)))
    if pipelines:
        config.custom_pipelines = pipelines
    elif hasattr(config, "custom_pipelines"):
        del config.custom_pipelines


def ensure_remote_code(save_dir: str | Path, model) -> None:
    """Make sure `save_dir` holds the code that its config's `auto_map` and `custom_pipelines` point to.

    transformers copies the code only for classes registered with `register_for_auto_class`; a head without an Auto
    class (e.g. the retrieval model) would otherwise be saved with an `auto_map` whose module file is missing.
    """
    module_file = Path(sys.modules[type(model).__module__].__file__).name
    if not (Path(save_dir) / module_file).is_file():
        custom_object_save(model, save_dir)
    for task in getattr(model.config, "custom_pipelines", None) or {}:
        if task in PIPELINES.supported_tasks:
            custom_object_save(PIPELINES.supported_tasks[task]["impl"], save_dir)


def _save_pretrained_with_remote_code(self, save_directory, *args, **kwargs):
    """`PreTrainedModel.save_pretrained`, writing a folder that loads without transformers-scl (see `hub.py`)."""
    prepare_config_for_remote_code(self)
    result = PreTrainedModel.save_pretrained(self, save_directory, *args, **kwargs)
    if kwargs.get("is_main_process", True):
        ensure_remote_code(save_directory, self)
    return result


def register_remote_code() -> None:
    """Register the SCL classes for remote code and make every SCL model's `save_pretrained` package it.

    Run once on `import transformers_scl`. The modeling file stays free of packaging: the copy of it that a saved
    folder carries is plain model code.
    """
    SCLConfig.register_for_auto_class()
    for auto_class, model_class in AUTO_MAP_CLASSES.items():
        model_class.register_for_auto_class(auto_class)
    modeling_scl.SCLPreTrainedModel.save_pretrained = _save_pretrained_with_remote_code


# ---------------------------------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------------------------------


def save_pretrained(model, save_dir: str | Path, processor=None, **card_kwargs) -> Path:
    """Save `model` (with its code), `processor` and a generated model card to `save_dir`; returns the folder."""
    save_dir = Path(save_dir)
    model.save_pretrained(save_dir)
    if processor is not None:
        processor.save_pretrained(save_dir)
    write_model_card(save_dir, model, **card_kwargs)
    return save_dir


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload SCL model",
) -> str:
    """Create `repo_id` if needed and upload `folder` (e.g. a converted checkpoint) in one commit; returns its URL."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return commit.commit_url


def push_to_hub(
    model,
    repo_id: str,
    *,
    processor=None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload SCL model",
    **card_kwargs,
) -> str:
    """Push `model`, its `processor` and a generated model card to `repo_id` in one commit; returns the commit URL.

    `card_kwargs` go to `model_card` (e.g. `training_facts`, `source_checkpoint`, `base_model`, `license`).
    """
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, processor, repo_id=repo_id, **card_kwargs)
        return push_folder_to_hub(tmp, repo_id, private=private, token=token, commit_message=commit_message)


__all__ = [
    "AUTO_MAP_CLASSES",
    "PIPELINES",
    "card_metadata",
    "custom_pipelines",
    "ensure_remote_code",
    "model_card",
    "push_folder_to_hub",
    "prepare_config_for_remote_code",
    "push_to_hub",
    "register_remote_code",
    "save_pretrained",
    "write_model_card",
]
