#!/usr/bin/env python
"""Pre-train SCL (MLM + ITM + ITC + MVSC + MLSC, spec §2) on image-text data, video-text data, or both, with `Trainer`.

Data sources (`--image_dataset` and/or `--video_dataset`; give both to train on images and videos jointly, in
single-modality batches):

* `synthetic`: the built-in shape scenes / moving-shape clips (`transformers_scl.data.synthetic`);
* a folder with an imagefolder-style `metadata.jsonl` (`file_name` + caption), flat or with one sub-folder per split;
* a COCO / Flickr30K Karpathy-split JSON file (images under `--image_root`);
* any `datasets` name or local data set directory, with `--image_column` / `--video_column` / `--caption_column`.

The model starts from CLIP + RoBERTa checkpoints (`--vision_model_name_or_path`, `--text_model_name_or_path`), from an
SCL checkpoint (`--model_name_or_path`), or from scratch (`--config_name` and/or `--config_overrides`, with
`--tokenizer_name`). The same command runs under `python`, `torchrun --nproc_per_node N` and `accelerate launch`;
see examples/README.md.
"""

import contextlib
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from datasets import Dataset, IterableDataset, load_dataset, load_from_disk
from torch.utils.data import ConcatDataset, DataLoader, Sampler
from torchvision import tv_tensors
from transformers import AutoTokenizer, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint, seed_worker

from transformers_scl.configuration_scl import SCLConfig
from transformers_scl.data import (
    MediaTextTransform,
    ModalityGroupedBatchSampler,
    SCLDataCollator,
    SCLPretrainingCollator,
    SkipCounter,
    SkipReportCallback,
    caption_groups,
    image_text_pairs,
    load_image_text_folder,
    load_karpathy_captions,
    load_video_text_folder,
    make_synthetic_image_text,
    make_synthetic_video_text,
    render_video,
    video_text_pairs,
)
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.metrics import retrieval_recall
from transformers_scl.modeling_scl import SCLForPreTraining
from transformers_scl.optimization import scl_parameter_groups
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.transforms import pretraining_transform
from transformers_scl.video_processing_scl import (
    SCLVideoProcessor,
    decode_video,
    frames_to_tensor,
    sample_frame_indices,
)

logger = logging.getLogger(__name__)

ID_COLUMNS = {"image": "image_id", "video": "video_id"}
PIXEL_KEYS = {"image": "pixel_values", "video": "pixel_values_videos"}
RECALL_KS = (1, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An SCL checkpoint (local folder or Hub id) to continue pre-training from."}
    )
    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A CLIP checkpoint whose vision tower initialises SCL's (with the text model)."},
    )
    text_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A RoBERTa checkpoint that initialises SCL's text tower (with the vision model)."},
    )
    config_name: str | None = field(
        default=None, metadata={"help": "An SCLConfig (folder or config.json) to train from scratch."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "JSON merged into the config, e.g. "
            '\'{"pretraining_objectives": ["mlm", "itm", "itc"], "text_config": {"num_hidden_layers": 6}}\'.'
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the text model's, or the checkpoint's processor)."}
    )
    processor_name: str | None = field(
        default=None, metadata={"help": "A saved SCLProcessor (default: the one saved with --model_name_or_path)."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Input resolution (default: config.image_size)."})
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (default: config.num_frames)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are stored."})


@dataclass
class DataArguments:
    image_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Image-text source: 'synthetic', a folder with metadata.jsonl, a Karpathy JSON file, or a "
            "`datasets` name / local data set folder."
        },
    )
    video_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Video-text source: 'synthetic', a folder of videos with metadata.jsonl, or a `datasets` name."
        },
    )
    image_dataset_config: str | None = field(default=None, metadata={"help": "`datasets` config of the image source."})
    video_dataset_config: str | None = field(default=None, metadata={"help": "`datasets` config of the video source."})
    image_root: str | None = field(default=None, metadata={"help": "Image folder of a Karpathy JSON file."})
    image_column: str = field(default="image", metadata={"help": "Image column of a `datasets` source."})
    video_column: str = field(default="video", metadata={"help": "Video column (file paths) of a `datasets` source."})
    caption_column: str = field(
        default="caption", metadata={"help": "Caption column (a string or a list of strings)."}
    )
    id_column: str | None = field(
        default=None, metadata={"help": "Column identifying an image/video (default: one per row)."}
    )
    train_split: str = field(default="train", metadata={"help": "Training split (Karpathy: e.g. 'train,restval')."})
    eval_split: str = field(
        default="validation", metadata={"help": "Held-out split for evaluation (Karpathy: 'val')."}
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Images/videos held out for evaluation when a source has no eval split."}
    )
    max_seq_length: int = field(default=50, metadata={"help": "Text truncation length (spec §1.3: 50)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows per source."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many eval rows per source."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream a single `datasets` source (needs --max_steps)."})
    horizontal_flip: bool | None = field(
        default=None,
        metadata={
            "help": "Random horizontal flips in the pre-training augmentation (spec §1.2). Default: on, except for "
            "synthetic data, whose captions say left and right."
        },
    )
    synthetic_train_size: int = field(default=2000, metadata={"help": "Synthetic training examples per modality."})
    synthetic_eval_size: int = field(
        default=200, metadata={"help": "Synthetic held-out examples per modality, before dropping repeated captions."}
    )
    synthetic_image_size: int = field(default=64, metadata={"help": "Resolution the synthetic data is drawn at."})
    synthetic_video_frames: int = field(default=8, metadata={"help": "Frames of each synthetic clip."})
    synthetic_captions_per_image: int = field(default=1, metadata={"help": "Paraphrases per synthetic scene (1-3)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic data (eval uses seed + 1)."})


@dataclass
class PretrainingArguments(TrainingArguments):
    """`TrainingArguments` with SCL's pre-training optimiser defaults (spec §3.2, §4) and its learning-rate multipliers."""

    learning_rate: float = field(default=2e-5, metadata={"help": "Base learning rate (spec §4: 2e-5)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay; none on biases and norms."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2 (spec §3.2: 0.98)."})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Linear warmup: a fraction of the steps if < 1 (spec §4: 10%%), else steps."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the transforms and the collator choose the model inputs."}
    )
    lr_mult_head: float = field(default=5.0, metadata={"help": "LR multiplier of the MLM/ITM heads (spec §3.2)."})
    lr_mult_cross_modal: float = field(
        default=5.0, metadata={"help": "LR multiplier of the co-attention fusion (`cross_modal*`, spec §3.2)."}
    )


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def _deep_update(base: dict, overrides: dict) -> dict:
    """Merge `overrides` into `base`, recursing into nested dicts (so `{"text_config": {...}}` edits single fields)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_overrides(text: str | None) -> dict:
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--config_overrides must be a JSON object, got {text!r}: {error}") from error
    if not isinstance(overrides, dict):
        raise ValueError(f"--config_overrides must be a JSON object, got {text!r}.")
    return overrides


def _with_overrides(config: SCLConfig, overrides: dict) -> SCLConfig:
    return SCLConfig.from_dict(_deep_update(config.to_dict(), overrides)) if overrides else config


def build_processor(tokenizer, config: SCLConfig) -> SCLProcessor:
    """An `SCLProcessor` matching the model: square resize to `config.image_size`, `config.num_frames` frames."""
    image_processor = SCLImageProcessor(size={"height": config.image_size, "width": config.image_size})
    video_processor = SCLVideoProcessor(
        size={"height": config.image_size, "width": config.image_size},
        num_frames=config.num_frames,
        max_frames=config.vision_config.max_frames,
    )
    return SCLProcessor(image_processor, video_processor, tokenizer)


def load_model_and_processor(model_args: ModelArguments) -> tuple[SCLForPreTraining, SCLProcessor]:
    """The model (from an SCL checkpoint, from CLIP + RoBERTa towers, or from scratch) and a matching processor."""
    overrides = _parse_overrides(model_args.config_overrides)
    for name in ("image_size", "num_frames"):
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    hub = {"cache_dir": model_args.cache_dir}

    if model_args.model_name_or_path:
        config = SCLConfig.from_pretrained(model_args.model_name_or_path, **hub)
        model = SCLForPreTraining.from_pretrained(
            model_args.model_name_or_path, config=_with_overrides(config, overrides), **hub
        )
    elif model_args.vision_model_name_or_path or model_args.text_model_name_or_path:
        if not (model_args.vision_model_name_or_path and model_args.text_model_name_or_path):
            raise ValueError("Pass both --vision_model_name_or_path (CLIP) and --text_model_name_or_path (RoBERTa).")
        image_size = overrides.pop("image_size", SCLConfig.image_size)
        model = SCLForPreTraining.from_vision_text_pretrained(
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
            image_size=image_size,
            **overrides,
        )
    elif model_args.config_name or overrides:
        config = SCLConfig.from_pretrained(model_args.config_name, **hub) if model_args.config_name else SCLConfig()
        model = SCLForPreTraining(_with_overrides(config, overrides))
        logger.info("Training a new SCL model from scratch: %.2fM parameters.", model.num_parameters() / 1e6)
    else:
        raise ValueError(
            "Say where the model starts: --model_name_or_path (SCL checkpoint), --vision_model_name_or_path and "
            "--text_model_name_or_path (CLIP + RoBERTa), or --config_name / --config_overrides (from scratch)."
        )

    processor_source = model_args.processor_name or (
        model_args.model_name_or_path if not model_args.tokenizer_name else None
    )
    if processor_source:
        processor = SCLProcessor.from_pretrained(processor_source, **hub)
    else:
        tokenizer_source = model_args.tokenizer_name or model_args.text_model_name_or_path
        if tokenizer_source is None:
            raise ValueError("Training from scratch needs --tokenizer_name (a RoBERTa-style BPE tokenizer).")
        processor = build_processor(AutoTokenizer.from_pretrained(tokenizer_source, **hub), model.config)

    vocab_size = model.config.text_config.vocab_size
    if len(processor.tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(processor.tokenizer)} tokens but the text tower only {vocab_size} embeddings; "
            'set {"text_config": {"vocab_size": ...}} in --config_overrides.'
        )
    if processor.image_processor.size.height != model.config.image_size:
        logger.warning(
            "The processor resizes to %s px but config.image_size is %s px.",
            processor.image_processor.size.height,
            model.config.image_size,
        )
    return model, processor


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def _unique_captions(pairs: Dataset) -> Dataset:
    """Keep the first example of each caption: with two identical captions, retrieval could not tell which is right
    (and ties count as misses), so the held-out synthetic galleries have one distinct caption per image/video."""
    seen: set[str] = set()
    keep = [index for index, caption in enumerate(pairs["caption"]) if not (caption in seen or seen.add(caption))]
    return pairs.select(keep)


def _synthetic_pairs(modality: str, split: str, data_args: DataArguments) -> Dataset:
    held_out = split != "train"
    size = data_args.synthetic_eval_size if held_out else data_args.synthetic_train_size
    seed = data_args.synthetic_seed + int(held_out)
    split = "test" if held_out else "train"
    if modality == "image":
        # Held-out scenes get one (canonical) caption each, so chance level is exactly K / #images.
        captions = 1 if held_out else data_args.synthetic_captions_per_image
        scenes = make_synthetic_image_text(
            size, split=split, seed=seed, image_size=data_args.synthetic_image_size, captions_per_image=captions
        )
        pairs = image_text_pairs(scenes.remove_columns("objects"), id_column="image_id")
    else:
        pairs = make_synthetic_video_text(
            size,
            split=split,
            seed=seed,
            image_size=data_args.synthetic_image_size,
            num_frames=data_args.synthetic_video_frames,
        )
    return _unique_captions(pairs) if held_out else pairs


def _has_metadata(folder: Path, split: str | None) -> bool:
    return (folder / split / "metadata.jsonl").is_file() if split else (folder / "metadata.jsonl").is_file()


def load_pairs(
    source: str, modality: str, split: str, data_args: DataArguments, cache_dir: str | None = None
) -> Dataset | IterableDataset | None:
    """One row per (media, caption) of `split` of a source, with columns `image`/`video`, `caption` and an id
    column; None if the source has no such split."""
    if source == "synthetic":
        return _synthetic_pairs(modality, split, data_args)
    path = Path(source)
    config = data_args.image_dataset_config if modality == "image" else data_args.video_dataset_config
    if path.is_file() and path.suffix == ".json":
        if modality != "image" or data_args.image_root is None:
            raise ValueError(
                f"{source} looks like a Karpathy-split caption file: use --image_dataset with --image_root."
            )
        splits = split.split(",")
        with open(path) as file:
            present = {record["split"] for record in json.load(file)["images"]}
        if not set(splits) <= present:
            return None
        return load_karpathy_captions(path, data_args.image_root, split=splits, streaming=data_args.streaming)
    if path.is_dir() and (_has_metadata(path, split) or _has_metadata(path, None)):
        if not _has_metadata(path, split):
            return None if split != data_args.train_split else _load_folder(path, None, modality, data_args)
        return _load_folder(path, split, modality, data_args)

    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        loaded = load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                return None
            loaded = loaded[split]
        elif split != data_args.train_split:
            return None
        dataset = loaded.to_iterable_dataset() if data_args.streaming else loaded
    else:
        try:
            dataset = load_dataset(source, config, split=split, streaming=data_args.streaming, cache_dir=cache_dir)
        except ValueError as error:
            if "Unknown split" in str(error):
                return None
            raise
    pair = image_text_pairs if modality == "image" else video_text_pairs
    column = data_args.image_column if modality == "image" else data_args.video_column
    return pair(
        dataset,
        **{f"{modality}_column": column},
        caption_column=data_args.caption_column,
        id_column=data_args.id_column,
    )


def _load_folder(path: Path, split: str | None, modality: str, data_args: DataArguments):
    load = load_image_text_folder if modality == "image" else load_video_text_folder
    return load(path, caption_column=data_args.caption_column, split=split, streaming=data_args.streaming)


def split_off_held_out(pairs: Dataset, id_column: str, percentage: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out `percentage` % of the images/videos (all captions of one stay together, so nothing leaks)."""
    ids = sorted(set(pairs[id_column]))
    count = max(1, round(len(ids) * percentage / 100))
    if count >= len(ids):
        raise ValueError(f"Cannot hold out {percentage}% of {len(ids)} images/videos and still train.")
    held_out = set(random.Random(seed).sample(ids, count))
    train = pairs.filter(lambda group: group not in held_out, input_columns=id_column)
    return train, pairs.filter(lambda group: group in held_out, input_columns=id_column)


def _truncate(dataset, limit: int | None):
    if limit is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.take(limit)
    return dataset.select(range(min(limit, len(dataset))))


class VideoTrainTransform:
    """Training clips: random segment sampling (spec §1.2 `'random'`: one random frame in each of F equal segments),
    then one pre-training augmentation shared by every frame of the clip (transforms.py)."""

    def __init__(self, num_frames: int, augmentation: Callable):
        self.num_frames = num_frames
        self.augmentation = augmentation

    def _indices(self, total: int):
        return sample_frame_indices(total, self.num_frames, "random")  # torch's global RNG: restored on resume

    def __call__(self, video: Any) -> torch.Tensor:
        if isinstance(video, (str, os.PathLike, bytes)) or hasattr(video, "read"):
            frames, _ = decode_video(video, sample_indices=lambda metadata: self._indices(metadata.total_num_frames))
        else:
            frames = frames_to_tensor(video, "video")
            frames = frames[torch.as_tensor(self._indices(len(frames)))]
        return self.augmentation(tv_tensors.Video(frames))


def train_transforms(config: SCLConfig, horizontal_flip: bool) -> dict[str, Callable]:
    """The pre-training augmentation for images and video clips (spec §1.2 `clip`), optionally without the flip."""
    augmentation = pretraining_transform(config.image_size, horizontal_flip=horizontal_flip)
    return {"image": augmentation, "video": VideoTrainTransform(config.num_frames, augmentation)}


@dataclass
class PretrainingData:
    train: dict[str, Dataset | IterableDataset]  # modality -> training rows (train transform attached)
    eval: dict[str, Dataset]  # modality -> held-out rows (eval transform attached)
    skip_counter: SkipCounter

    def train_dataset(self):
        """What `Trainer` trains on: one data set, or the modalities concatenated (see `modality_sizes`)."""
        parts = list(self.train.values())
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    @property
    def modality_sizes(self) -> list[int] | None:
        """Rows per modality, in `ConcatDataset` order; None for a streaming source."""
        if any(isinstance(part, IterableDataset) for part in self.train.values()):
            return None
        return [len(part) for part in self.train.values()]


def build_datasets(
    data_args: DataArguments, processor: SCLProcessor, config: SCLConfig, seed: int, cache_dir: str | None = None
) -> PretrainingData:
    """Training and held-out rows of every requested modality, with the train / eval transforms attached."""
    sources = {"image": data_args.image_dataset, "video": data_args.video_dataset}
    sources = {modality: source for modality, source in sources.items() if source}
    if not sources:
        raise ValueError("Give training data: --image_dataset and/or --video_dataset (e.g. 'synthetic').")
    if data_args.streaming and len(sources) > 1:
        raise ValueError("--streaming supports one source; joint image+video training needs map-style data sets.")
    flip = data_args.horizontal_flip
    if flip is None:
        flip = "synthetic" not in sources.values()
    augment = train_transforms(config, flip)
    skip_counter = SkipCounter()
    train, held_out = {}, {}
    for modality, source in sources.items():
        train_pairs = load_pairs(source, modality, data_args.train_split, data_args, cache_dir)
        if train_pairs is None:
            raise ValueError(f"{source} has no split {data_args.train_split!r} (--train_split).")
        eval_pairs = load_pairs(source, modality, data_args.eval_split, data_args, cache_dir)
        if eval_pairs is None and isinstance(train_pairs, Dataset) and data_args.validation_split_percentage > 0:
            logger.info(
                "%s has no %r split: holding out %s%% of it.",
                source,
                data_args.eval_split,
                data_args.validation_split_percentage,
            )
            train_pairs, eval_pairs = split_off_held_out(
                train_pairs, ID_COLUMNS[modality], data_args.validation_split_percentage, seed
            )
        common = {
            "modality": modality,
            "max_length": data_args.max_seq_length,
            "skip_counter": skip_counter,
            "load_media": render_video if source == "synthetic" and modality == "video" else None,
        }
        train_transform = MediaTextTransform(processor, **{f"{modality}_transform": augment[modality]}, **common)
        train[modality] = train_transform.apply_to(_truncate(train_pairs, data_args.max_train_samples))
        if eval_pairs is None:
            logger.warning("No held-out %s data: no evaluation for this modality.", modality)
            continue
        if isinstance(eval_pairs, IterableDataset):  # retrieval needs the whole gallery anyway
            eval_pairs = Dataset.from_list(list(_truncate(eval_pairs, data_args.max_eval_samples or 1000)))
        # Evaluation uses the processor's deterministic transform; videos are sampled uniformly (spec §1.2).
        pixel_kwargs = {"frame_sampling": "uniform"} if modality == "video" else None
        eval_transform = MediaTextTransform(processor, pixel_kwargs=pixel_kwargs, **common)
        held_out[modality] = eval_transform.apply_to(_truncate(eval_pairs, data_args.max_eval_samples))
    return PretrainingData(train=train, eval=held_out, skip_counter=skip_counter)


class RankSlicedBatchSampler(Sampler[list[int]]):
    """This rank's slice of every global batch of `batch_sampler` (whose batches hold `num_replicas` x B indices).

    All ranks walk the same global batches, so at every step they hold the same modality (the cross-rank ITC and MVSC
    gathers need equal shapes: an image has one frame-CLS, a video F), disjoint examples, and the same number of
    batches. The inner sampler is exposed as `batch_sampler`, which is where `Trainer` forwards `set_epoch`.
    """

    def __init__(self, batch_sampler: Sampler[list[int]], num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas}).")
        self.batch_sampler = batch_sampler
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self):
        for batch in self.batch_sampler:
            if len(batch) % self.num_replicas:
                raise ValueError(f"A global batch of {len(batch)} cannot be split over {self.num_replicas} ranks.")
            size = len(batch) // self.num_replicas
            yield batch[self.rank * size : (self.rank + 1) * size]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


class SCLPretrainingTrainer(Trainer):
    """`Trainer` for SCL pre-training.

    * Single-modality batches from a mix of image and video data, sharded by `RankSlicedBatchSampler`.
    * SCL's parameter groups (spec §3.2): heads x `lr_mult_head`, fusion x `lr_mult_cross_modal`, no decay on
      biases and norms.
    * Every loss and accuracy of `SCLForPreTraining` logged separately (`loss_mlm`, ..., `accuracy_itc`), averaged
      over the logging interval, the gradient-accumulation micro-batches and the ranks, like `loss`.
    * `evaluate` reports the held-out losses and zero-shot ITC retrieval R@1/R@5 in both directions per modality.
    * Resuming restores the RNG state before the first resumed batch is drawn (Trainer restores it after), so the
      random augmentation, frame sampling and text masking of that batch match an uninterrupted run.
    """

    def __init__(self, *args, modality_sizes: Sequence[int] | None = None, max_seq_length: int = 50, **kwargs):
        """`modality_sizes`: rows of each modality in the `ConcatDataset` passed as `train_dataset` (None: one
        streaming source, batched by `Trainer`). `max_seq_length`: caption truncation for retrieval evaluation."""
        super().__init__(*args, **kwargs)
        self.modality_sizes = list(modality_sizes) if modality_sizes is not None else None
        self.max_seq_length = max_seq_length
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_counts: dict[str, int] = {}
        self._resume_checkpoint: str | None = None
        self._rng_restored_from: str | None = None

    # -- optimiser (spec §3.2) ---------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = scl_parameter_groups(
                opt_model,
                lr=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                lr_mult_head=getattr(self.args, "lr_mult_head", 5.0),
                lr_mult_cross_modal=getattr(self.args, "lr_mult_cross_modal", 5.0),
            )
            # AdamW (or whatever --optim names) with --adam_beta1/2 and --adam_epsilon; each group carries its own lr.
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # -- data --------------------------------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        if self.modality_sizes is None or isinstance(self.train_dataset, IterableDataset):
            return super().get_train_dataloader()
        world_size, rank = self.args.world_size, self.args.process_index
        global_batch = self._train_batch_size * world_size
        # Full global batches only, so that every rank gets an equal, single-modality slice at every step.
        grouped = ModalityGroupedBatchSampler.from_lengths(
            self.modality_sizes,
            batch_size=global_batch,
            drop_last=True,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )
        if len(grouped) == 0:
            raise ValueError(
                f"No modality has enough examples {self.modality_sizes} for a global batch of {global_batch}."
            )
        # A plain DataLoader: Accelerate would re-shard the already rank-aware batch sampler.
        return DataLoader(
            self.train_dataset,
            batch_sampler=RankSlicedBatchSampler(grouped, world_size, rank),
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            worker_init_fn=partial(seed_worker, num_workers=self.args.dataloader_num_workers, rank=rank),
        )

    def _eval_dataloader(self, dataset: Dataset) -> DataLoader:
        """In-order, full batches of one modality, the same number on every rank (the loss gathers need it)."""
        world_size = self.args.world_size
        grouped = ModalityGroupedBatchSampler(
            [0] * len(dataset), self.args.per_device_eval_batch_size * world_size, shuffle=False, drop_last=True
        )
        return DataLoader(
            dataset,
            batch_sampler=RankSlicedBatchSampler(grouped, world_size, self.args.process_index),
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )

    # -- resuming ----------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No checkpoint found in {self.args.output_dir} to resume from.")
        self._resume_checkpoint = resume_from_checkpoint or None
        self._metric_sums, self._metric_counts = {}, {}
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _load_rng_state(self, checkpoint):
        if checkpoint is not None and checkpoint == self._rng_restored_from:
            return  # already restored before the first resumed batch was drawn (see `get_batch_samples`)
        super()._load_rng_state(checkpoint)
        self._rng_restored_from = checkpoint

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Trainer draws the first resumed batches, then restores the RNG: restore it first, so the augmentation and
        # masking of those batches use the checkpoint's RNG state, as they did in the uninterrupted run.
        if self._resume_checkpoint is not None:
            self._load_rng_state(self._resume_checkpoint)
            self._resume_checkpoint = None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    # -- per-loss logging --------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            self._accumulate(self._metric_sums, self._metric_counts, outputs)
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _accumulate(sums: dict, counts: dict, outputs) -> None:
        values = {}
        if outputs.loss_info is not None:
            values.update({f"loss_{name}": value for name, value in outputs.loss_info.items() if value is not None})
        for name in ("mlm", "itm", "itc"):
            accuracy = getattr(outputs, f"{name}_accuracy", None)
            if accuracy is not None:
                values[f"accuracy_{name}"] = accuracy
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
            counts[name] = counts.get(name, 0) + 1

    def _reduce_means(self, sums: dict, counts: dict) -> dict[str, float]:
        """Means over the accumulated micro-batches, averaged over ranks (every rank calls this with the same keys)."""
        names = sorted(sums)
        if not names:
            return {}
        local = torch.stack([sums[name] / counts[name] for name in names]).to(self.args.device)
        if self.args.world_size > 1:
            local = self.accelerator.reduce(local, reduction="mean")
        return dict(zip(names, local.tolist()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_sums:  # a training log: every rank gets here (Trainer gathers `loss`)
            logs.update(self._reduce_means(self._metric_sums, self._metric_counts))
            self._metric_sums, self._metric_counts = {}, {}
        super().log(logs, start_time)

    # -- evaluation --------------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        eval_sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(eval_sets, dict):
            raise ValueError("SCLPretrainingTrainer evaluates a dict {'image': dataset, 'video': dataset}.")
        model = self._wrap_model(self.model, training=False)
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        # The held-out losses use random masks: draw them from a fixed seed, and leave training's RNG untouched,
        # so that results do not depend on how often or when evaluation runs.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.args.seed)
            sums, counts = {}, {}
            for modality, dataset in eval_sets.items():
                loader = self._eval_dataloader(dataset)
                if len(loader) == 0:
                    logger.warning("Too few %s eval examples for one batch per rank: no eval losses.", modality)
                for batch in loader:
                    with self.autocast_smart_context_manager():
                        outputs = model(**self._prepare_inputs(batch))
                    self._accumulate(sums, counts, outputs)
            means = self._reduce_means(sums, counts)
            loss_names = [name for name in means if name.startswith("loss_")]
            if loss_names:
                metrics[f"{metric_key_prefix}_loss"] = sum(means[name] for name in loss_names)
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in means.items()})
            with self._full_parameters():
                for modality, dataset in eval_sets.items():
                    recall = self.zero_shot_retrieval(dataset, modality)
                    metrics.update({f"{metric_key_prefix}_{modality}_{name}": value for name, value in recall.items()})
        model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @contextlib.contextmanager
    def _full_parameters(self):
        """Retrieval calls the towers directly, not the wrapped model's `forward`, so under FSDP the parameters the
        root unit owns (embeddings, projections) must be gathered first. Not exercised by the CPU tests."""
        model = self.model_wrapped
        if not self.is_fsdp_enabled:
            yield
            return
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

        if isinstance(model, FullyShardedDataParallel):  # FSDP1
            with FullyShardedDataParallel.summon_full_params(model, writeback=False):
                yield
        elif isinstance(model, FSDPModule):  # FSDP2: wrapped layers gather their own shards in their forward hooks
            model.unshard()
            try:
                yield
            finally:
                model.reshard()
        else:
            yield

    @torch.no_grad()
    def zero_shot_retrieval(self, dataset: Dataset, modality: str) -> dict[str, float]:
        """Zero-shot ITC retrieval (cosine of the projected unimodal CLS features, spec §2.3) on a held-out set:
        R@1/R@5 image→text (`i2t_r*`) and text→image (`t2i_r*`), with every caption of an image counted as correct.

        Each rank encodes an equal share of the gallery and the captions (the same number of forward passes, as
        sharded models require); the features are gathered, so all ranks return the same numbers."""
        model = self.accelerator.unwrap_model(self.model)
        tokenizer = self.processing_class.tokenizer
        id_column = ID_COLUMNS[modality]
        raw = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
        text_to_image, image_to_texts, _ = caption_groups(raw[id_column])
        captions = raw["caption"]
        first_rows = [rows[0] for rows in image_to_texts]
        batch_size = self.args.per_device_eval_batch_size

        def shard(indices: list[int]) -> list[int]:  # equal, padded shares: [rank::world] after padding
            world = self.args.world_size
            per_rank = math.ceil(len(indices) / world)
            padded = indices + indices[-1:] * (per_rank * world - len(indices))
            return padded[self.args.process_index * per_rank : (self.args.process_index + 1) * per_rank]

        def gather(features: torch.Tensor, total: int) -> torch.Tensor:
            if self.args.world_size > 1:
                features = self.accelerator.gather(features.contiguous())
            return features[:total]

        device = self.args.device
        text_features = []
        for rows in _chunks(shard(list(range(len(captions)))), batch_size):
            encoded = tokenizer(
                [captions[row] for row in rows],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="pt",
            ).to(device)
            with self.autocast_smart_context_manager():
                text = model.get_text_features(encoded["input_ids"], encoded["attention_mask"])
                text_features.append(text.pooler_output.float())
        media_features = []
        media = dataset.select(shard(first_rows))
        for batch in DataLoader(media, batch_size=batch_size, collate_fn=SCLDataCollator(tokenizer, label_names=())):
            pixels = batch[PIXEL_KEYS[modality]].to(device)
            encode = model.get_video_features if modality == "video" else model.get_image_features
            with self.autocast_smart_context_manager():
                media_features.append(encode(pixels).pooler_output.float())
        # `pooler_output` is the L2-normalised ITC embedding (spec §2.3), so the dot product is the cosine.
        text = gather(torch.cat(text_features), len(captions))
        media = gather(torch.cat(media_features), len(first_rows))
        recall = retrieval_recall((media @ text.T).cpu(), txt2img=text_to_image, ks=RECALL_KS)
        renamed = {}
        for k in RECALL_KS:
            renamed[f"i2t_r{k}"] = recall[f"txt_r{k}"]  # image → text ("text retrieval")
            renamed[f"t2i_r{k}"] = recall[f"img_r{k}"]  # text → image ("image retrieval")
        renamed["num_candidates"] = len(first_rows)
        return renamed


def _chunks(items: Sequence[int], size: int):
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(args: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, PretrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    return parser.parse_args_into_dataclasses(args=args)


@dataclass
class PretrainingJob:
    """A configured pre-training run: `prepare` builds it, `run` trains, evaluates, saves and pushes."""

    trainer: SCLPretrainingTrainer
    data: PretrainingData
    data_args: DataArguments
    resume_from: str | None = None

    def run(self, print_metrics: bool = True) -> dict[str, dict[str, float]]:
        """Train and/or evaluate as the arguments ask; returns the `train` and `eval` metrics."""
        trainer, args = self.trainer, self.trainer.args
        results = {}
        if args.do_train:
            output = trainer.train(resume_from_checkpoint=self.resume_from)
            trainer.save_model()  # model + processor (the `processing_class`)
            if print_metrics:
                trainer.log_metrics("train", output.metrics)
            trainer.save_metrics("train", output.metrics)
            trainer.save_state()
            results["train"] = output.metrics
        if args.do_eval and self.data.eval:
            results["eval"] = trainer.evaluate()
            if print_metrics:
                trainer.log_metrics("eval", results["eval"])
            trainer.save_metrics("eval", results["eval"])
        sources = list(dict.fromkeys(s for s in (self.data_args.image_dataset, self.data_args.video_dataset) if s))
        card = {
            "tasks": "vision-language-pretraining",
            "tags": ["scl", "image-text", "video-text"],
            "dataset": sources,
        }
        if args.push_to_hub:
            trainer.push_to_hub(**card)
        elif args.do_train:
            trainer.create_model_card(**card)
        return results


def prepare(args: Sequence[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> PretrainingJob:
    """Parse `args` (default: the command line) and build the model, the processor, the data and the trainer."""
    model_args, data_args, training_args = parse_args(args)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(
        "Process %s of %s, device %s", training_args.process_index, training_args.world_size, training_args.device
    )

    resume_from = training_args.resume_from_checkpoint
    if resume_from is None and training_args.do_train and os.path.isdir(training_args.output_dir):
        resume_from = get_last_checkpoint(training_args.output_dir)
        if resume_from is not None:
            logger.warning("Checkpoint found: resuming the run from %s.", resume_from)

    set_seed(training_args.seed)
    model, processor = load_model_and_processor(model_args)
    with training_args.main_process_first(desc="loading the data"):
        data = build_datasets(data_args, processor, model.config, training_args.seed, model_args.cache_dir)

    trainer = SCLPretrainingTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_dataset() if training_args.do_train else None,
        eval_dataset=data.eval or None,
        modality_sizes=data.modality_sizes,
        max_seq_length=data_args.max_seq_length,
        # Masks come from torch's global RNG, which checkpoints save and resuming restores.
        data_collator=SCLPretrainingCollator.from_config(processor.tokenizer, model.config),
        processing_class=processor,  # saved with every checkpoint and pushed with the model
        callbacks=[SkipReportCallback(data.skip_counter), *(callbacks or [])],
    )
    return PretrainingJob(trainer=trainer, data=data, data_args=data_args, resume_from=resume_from)


def main(args: Sequence[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> SCLPretrainingTrainer:
    """Run the script with `args` (default: the command line); returns the trainer."""
    job = prepare(args, callbacks)
    job.run()
    return job.trainer


if __name__ == "__main__":
    main()
    # Under torchrun / accelerate launch, tear the process group down: gloo's threads abort the exit otherwise.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
