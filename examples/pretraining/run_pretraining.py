#!/usr/bin/env python
"""Pre-train SCL (MLM + ITM + ITC + MVSC + MLSC, spec §2) on image-text data, video-text data, or both, with `Trainer`.

Data sources (`--image_dataset` and/or `--video_dataset`; give both to train on images and videos jointly, in
single-modality batches):

* `synthetic`: the built-in shape scenes / moving-shape clips (`transformers_scl.data.synthetic`);
* a folder with an imagefolder-style `metadata.jsonl` (`file_name` + caption), flat or with one sub-folder per split;
* a COCO / Flickr30K Karpathy-split JSON file (images under `--image_root`);
* any `datasets` name or local data set directory, with `--image_column` / `--video_column` / `--caption_column`.

The model starts from CLIP + RoBERTa checkpoints (`--vision_model_name_or_path`, `--text_model_name_or_path`), from an
SCL checkpoint (`--model_name_or_path`), or from scratch (`--config_name` and/or `--config_overrides`), with
`--tokenizer_name` or a byte-level BPE trained on the training captions (`--train_tokenizer_vocab_size`). The same
command runs under `python`, `torchrun --nproc_per_node N` and `accelerate launch`; see examples/README.md.
"""

import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from datasets import Dataset, IterableDataset
from torch.utils.data import ConcatDataset, DataLoader
from transformers import AutoTokenizer, HfArgumentParser, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from transformers_scl.configuration_scl import SCLConfig
from transformers_scl.data import (
    MediaTextTransform,
    ModalityGroupedBatchSampler,
    RankSlicedBatchSampler,
    SCLDataCollator,
    SCLPretrainingCollator,
    SeededBatchSampler,
    SeededDataset,
    SkipCounter,
    SkipReportCallback,
    caption_groups,
    load_caption_pairs,
    make_synthetic_pairs,
    render_video,
    split_off_held_out,
    train_caption_tokenizer,
    truncate,
)
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.metrics import retrieval_recall
from transformers_scl.modeling_scl import SCLForPreTraining
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.retrieval import encode_images, encode_texts, itc_similarity
from transformers_scl.training import (
    LossTermsMeter,
    SCLDataArguments,
    SCLTrainer,
    SCLTrainingArguments,
    setup_logging,
)
from transformers_scl.transforms import VideoTrainTransform, pretraining_transform
from transformers_scl.video_processing_scl import SCLVideoProcessor

logger = logging.getLogger(__name__)

ID_COLUMNS = {"image": "image_id", "video": "video_id"}
RECALL_KS = (1, 5)


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
    train_tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "Without --tokenizer_name: train a byte-level BPE of this many tokens on the training captions "
            "(saved in <output_dir>/tokenizer and with the model); the text tower's vocab_size follows it."
        },
    )
    processor_name: str | None = field(
        default=None, metadata={"help": "A saved SCLProcessor (default: the one saved with --model_name_or_path)."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Input resolution (default: config.image_size)."})
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (default: config.num_frames)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are stored."})


@dataclass
class DataArguments(SCLDataArguments):
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
    id_column: str | None = field(default=None, metadata={"help": "Column identifying an image/video (default: row)."})
    train_split: str = field(default="train", metadata={"help": "Training split (Karpathy: e.g. 'train,restval')."})
    eval_split: str = field(
        default="validation", metadata={"help": "Held-out split for evaluation (Karpathy: 'val')."}
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Images/videos held out for evaluation when a source has no eval split."}
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
class PretrainingArguments(SCLTrainingArguments):
    """`SCLTrainingArguments` with the pre-training recipe (spec §3.2, §4) as defaults."""

    learning_rate: float = field(default=2e-5, metadata={"help": "Base learning rate (spec §4: 2e-5)."})


# ---------------------------------------------------------------------------------------------------------------------
# Data: (media, caption) rows per modality, then the train / eval transforms
# ---------------------------------------------------------------------------------------------------------------------


def load_pairs(source: str, modality: str, split: str, data_args: DataArguments, cache_dir: str | None = None):
    """One row per (media, caption) of `split` of a source (`load_caption_pairs`); None if it has no such split."""
    if source == "synthetic":
        held_out = split != "train"
        return make_synthetic_pairs(
            modality,
            data_args.synthetic_eval_size if held_out else data_args.synthetic_train_size,
            split="test" if held_out else "train",
            seed=data_args.synthetic_seed + int(held_out),
            image_size=data_args.synthetic_image_size,
            num_frames=data_args.synthetic_video_frames,
            captions_per_image=data_args.synthetic_captions_per_image,
        )
    return load_caption_pairs(
        source,
        modality,
        split,
        train_split=data_args.train_split,
        image_root=data_args.image_root,
        media_column=data_args.image_column if modality == "image" else data_args.video_column,
        caption_column=data_args.caption_column,
        id_column=data_args.id_column,
        config_name=data_args.image_dataset_config if modality == "image" else data_args.video_dataset_config,
        streaming=data_args.streaming,
        cache_dir=cache_dir,
    )


def load_raw_pairs(data_args: DataArguments, seed: int, cache_dir: str | None = None) -> dict[str, tuple]:
    """{modality: (training rows, held-out rows or None, source)}; sources without an eval split get
    `--validation_split_percentage` of their images/videos held out."""
    sources = {"image": data_args.image_dataset, "video": data_args.video_dataset}
    sources = {modality: source for modality, source in sources.items() if source}
    if not sources:
        raise ValueError("Give training data: --image_dataset and/or --video_dataset (e.g. 'synthetic').")
    if data_args.streaming and len(sources) > 1:
        raise ValueError("--streaming supports one source; joint image+video training needs map-style data sets.")
    raw = {}
    for modality, source in sources.items():
        train = load_pairs(source, modality, data_args.train_split, data_args, cache_dir)
        if train is None:
            raise ValueError(f"{source} has no split {data_args.train_split!r} (--train_split).")
        held_out = load_pairs(source, modality, data_args.eval_split, data_args, cache_dir)
        if held_out is None and isinstance(train, Dataset) and data_args.validation_split_percentage > 0:
            percentage = data_args.validation_split_percentage
            logger.info("%s has no %r split: holding out %s%% of it.", source, data_args.eval_split, percentage)
            train, held_out = split_off_held_out(train, ID_COLUMNS[modality], percentage, seed)
        if isinstance(held_out, IterableDataset):  # retrieval needs the whole gallery anyway
            held_out = Dataset.from_list(list(truncate(held_out, data_args.max_eval_samples or 1000)))
        train, held_out = truncate(train, data_args.max_train_samples), truncate(held_out, data_args.max_eval_samples)
        raw[modality] = (train, held_out, source)
    return raw


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


def attach_transforms(raw: dict[str, tuple], data_args: DataArguments, processor, config) -> PretrainingData:
    """Training rows get the pre-training augmentation (spec §1.2 `clip`; clips: random segments, one augmentation
    per clip), held-out rows the processor's deterministic transform (videos sampled uniformly)."""
    flip = data_args.horizontal_flip
    if flip is None:
        flip = all(source != "synthetic" for *_, source in raw.values())
    augmentation = pretraining_transform(config.image_size, horizontal_flip=flip)
    augment = {"image": augmentation, "video": VideoTrainTransform(config.num_frames, augmentation)}
    skip_counter = SkipCounter()
    train, held_out = {}, {}
    for modality, (train_pairs, eval_pairs, source) in raw.items():
        common = {
            "modality": modality,
            "max_length": data_args.max_seq_length,
            "skip_counter": skip_counter,
            "load_media": render_video if source == "synthetic" and modality == "video" else None,
        }
        transform = MediaTextTransform(processor, **{f"{modality}_transform": augment[modality]}, **common)
        train[modality] = transform.apply_to(train_pairs)
        if eval_pairs is None:
            logger.warning("No held-out %s data: no evaluation for this modality.", modality)
            continue
        pixel_kwargs = {"frame_sampling": "uniform"} if modality == "video" else None
        held_out[modality] = MediaTextTransform(processor, pixel_kwargs=pixel_kwargs, **common).apply_to(eval_pairs)
    return PretrainingData(train=train, eval=held_out, skip_counter=skip_counter)


def build_datasets(data_args: DataArguments, processor, config, seed: int, cache_dir: str | None = None):
    """Training and held-out rows of every requested modality, with the train / eval transforms attached."""
    return attach_transforms(load_raw_pairs(data_args, seed, cache_dir), data_args, processor, config)


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def _deep_update(base: dict, overrides: dict) -> dict:
    """Merge `overrides` into `base`, recursing into nested dicts (so `{"text_config": {...}}` edits single fields)."""
    merged = dict(base)
    for key, value in overrides.items():
        is_nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_update(merged[key], value) if is_nested else value
    return merged


def _parse_overrides(text: str | None) -> dict:
    try:
        overrides = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"--config_overrides must be a JSON object, got {text!r}: {error}") from error
    if not isinstance(overrides, dict):
        raise ValueError(f"--config_overrides must be a JSON object, got {text!r}.")
    return overrides


def build_processor(tokenizer, config: SCLConfig) -> SCLProcessor:
    """An `SCLProcessor` matching the model: square resize to `config.image_size`, `config.num_frames` frames."""
    size = {"height": config.image_size, "width": config.image_size}
    video_processor = SCLVideoProcessor(
        size=size, num_frames=config.num_frames, max_frames=config.vision_config.max_frames
    )
    return SCLProcessor(SCLImageProcessor(size=size), video_processor, tokenizer)


def load_model_and_processor(model_args: ModelArguments, tokenizer=None) -> tuple[SCLForPreTraining, SCLProcessor]:
    """The model (from an SCL checkpoint, from CLIP + RoBERTa towers, or from scratch) and a matching processor.
    A given `tokenizer` (e.g. trained on the captions) sets the vocab size of a model trained from scratch."""
    overrides = _parse_overrides(model_args.config_overrides)
    for name in ("image_size", "num_frames"):
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    hub = {"cache_dir": model_args.cache_dir}

    if model_args.model_name_or_path:
        config = SCLConfig.from_pretrained(model_args.model_name_or_path, **hub)
        config = SCLConfig.from_dict(_deep_update(config.to_dict(), overrides))
        model = SCLForPreTraining.from_pretrained(model_args.model_name_or_path, config=config, **hub)
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
    elif model_args.config_name or overrides or tokenizer is not None:
        if tokenizer is not None and "vocab_size" not in overrides.get("text_config", {}):
            overrides = _deep_update(overrides, {"text_config": {"vocab_size": len(tokenizer)}})
        config = SCLConfig.from_pretrained(model_args.config_name, **hub) if model_args.config_name else SCLConfig()
        model = SCLForPreTraining(SCLConfig.from_dict(_deep_update(config.to_dict(), overrides)))
        logger.info("Training a new SCL model from scratch: %.2fM parameters.", model.num_parameters() / 1e6)
    else:
        raise ValueError(
            "Say where the model starts: --model_name_or_path (SCL checkpoint), --vision_model_name_or_path and "
            "--text_model_name_or_path (CLIP + RoBERTa), or --config_name / --config_overrides (from scratch)."
        )

    processor_source = model_args.processor_name
    if processor_source is None and tokenizer is None and not model_args.tokenizer_name:
        processor_source = model_args.model_name_or_path
    if processor_source:
        processor = SCLProcessor.from_pretrained(processor_source, **hub)
    else:
        if tokenizer is None:
            source = model_args.tokenizer_name or model_args.text_model_name_or_path
            if source is None:
                raise ValueError(
                    "Training from scratch needs a tokenizer: --tokenizer_name (a RoBERTa-style BPE tokenizer), or "
                    "--train_tokenizer_vocab_size N to train one on the training captions."
                )
            tokenizer = AutoTokenizer.from_pretrained(source, **hub)
        processor = build_processor(tokenizer, model.config)

    vocab_size = model.config.text_config.vocab_size
    if len(processor.tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(processor.tokenizer)} tokens but the text tower only {vocab_size} embeddings; "
            'set {"text_config": {"vocab_size": ...}} in --config_overrides.'
        )
    if processor.image_processor.size.height != model.config.image_size:
        size = processor.image_processor.size.height
        logger.warning("The processor resizes to %s px but config.image_size is %s px.", size, model.config.image_size)
    return model, processor


def caption_tokenizer(model_args: ModelArguments, raw: dict, training_args: PretrainingArguments, max_length: int):
    """`--train_tokenizer_vocab_size`: a byte-level BPE trained on the training captions (once per node; the other
    processes load it), saved in `<output_dir>/tokenizer`. None when the tokenizer comes from elsewhere."""
    if model_args.train_tokenizer_vocab_size is None:
        return None
    if model_args.tokenizer_name or model_args.processor_name or model_args.model_name_or_path:
        raise ValueError(
            "--train_tokenizer_vocab_size trains a new tokenizer; it cannot be combined with --tokenizer_name, "
            "--processor_name or --model_name_or_path."
        )
    save_dir = os.path.join(training_args.output_dir, "tokenizer")
    with training_args.main_process_first(desc="training the tokenizer"):
        if training_args.local_process_index != 0:
            return AutoTokenizer.from_pretrained(save_dir)
        captions = []
        for train, *_ in raw.values():
            if isinstance(train, IterableDataset):
                raise ValueError("--train_tokenizer_vocab_size needs map-style data, not --streaming.")
            captions.extend(train["caption"])
        vocab_size = model_args.train_tokenizer_vocab_size
        logger.info("Training a %d-token byte-level BPE on %d captions.", vocab_size, len(captions))
        return train_caption_tokenizer(captions, vocab_size, save_dir, max_length)


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


class SCLPretrainingTrainer(SCLTrainer):
    """`SCLTrainer` (SCL's optimizer, every loss term logged) for pre-training, through public hooks only.

    * `get_train_dataloader`: single-modality batches from a mix of image and video data, sharded by
      `RankSlicedBatchSampler`. Each example is drawn under a seed of its own (`SeededBatchSampler` +
      `SeededDataset`: run seed, epoch, index), which also seeds the batch's text masks, so the data pipeline never
      touches the global RNG. Together with `Trainer`'s checkpointed RNG state (which the model's ITM sampling, patch
      dropping and dropout draw from), a resumed run continues the uninterrupted one exactly, with any number of
      DataLoader workers.
    * `evaluate`: the held-out losses and zero-shot ITC retrieval R@1/R@5 in both directions per modality, with
      `transformers_scl.retrieval`, under a fixed seed and without touching training's RNG.
    """

    def __init__(self, *args, modality_sizes: Sequence[int] | None = None, max_seq_length: int = 50, **kwargs):
        """`modality_sizes`: rows of each modality in the `ConcatDataset` passed as `train_dataset` (None: one
        streaming source, batched by `Trainer`). `max_seq_length`: caption truncation for retrieval evaluation."""
        super().__init__(*args, **kwargs)
        self.modality_sizes = list(modality_sizes) if modality_sizes is not None else None
        self.max_seq_length = max_seq_length

    def get_train_dataloader(self) -> DataLoader:
        if self.modality_sizes is None or isinstance(self.train_dataset, IterableDataset):
            return super().get_train_dataloader()
        args = self.args
        seed = args.data_seed if args.data_seed is not None else args.seed
        global_batch = args.train_batch_size * args.world_size
        # Full global batches only, so that every rank gets an equal, single-modality slice at every step.
        grouped = ModalityGroupedBatchSampler.from_lengths(
            self.modality_sizes, batch_size=global_batch, drop_last=True, seed=seed
        )
        if len(grouped) == 0:
            raise ValueError(
                f"No modality has enough examples {self.modality_sizes} for a global batch of {global_batch}."
            )
        # A plain DataLoader: Accelerate would re-shard the already rank-aware batch sampler.
        return DataLoader(
            SeededDataset(self.train_dataset),
            batch_sampler=RankSlicedBatchSampler(
                SeededBatchSampler(grouped, seed), args.world_size, args.process_index
            ),
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
        )

    def _eval_batches(self, dataset: Dataset) -> DataLoader:
        """In-order, full batches of one modality, the same number on every rank (the loss gathers need it)."""
        world_size = self.args.world_size
        grouped = ModalityGroupedBatchSampler(
            [0] * len(dataset), self.args.per_device_eval_batch_size * world_size, shuffle=False, drop_last=True
        )
        sampler = RankSlicedBatchSampler(grouped, world_size, self.args.process_index)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        eval_sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(eval_sets, dict):
            raise ValueError("SCLPretrainingTrainer evaluates a dict {'image': dataset, 'video': dataset}.")
        model = self.model_wrapped  # the DDP / FSDP module once training has started, else the model
        was_training = model.training
        model.eval()
        meter, metrics = LossTermsMeter(), {}
        # Held-out masks and ITM pairs are random: draw them from a fixed seed and leave training's RNG untouched, so
        # results do not depend on how often or when evaluation runs.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.args.seed)
            for modality, dataset in eval_sets.items():
                batches = self._eval_batches(dataset)
                if len(batches) == 0:
                    logger.warning("Too few %s eval examples for one batch per rank: no eval losses.", modality)
                for batch in batches:
                    with self.autocast_smart_context_manager():
                        meter.add(model(**{name: value.to(self.args.device) for name, value in batch.items()}))
            means = meter.pop_means(self.accelerator)
            losses = [value for name, value in means.items() if name.startswith("loss_")]
            if losses:
                metrics[f"{metric_key_prefix}_loss"] = sum(losses)
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
        root unit owns (embeddings, projections) are gathered first. Not exercised by the CPU tests."""
        model = self.model_wrapped
        if not self.is_fsdp_enabled:
            yield
            return
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(model, FullyShardedDataParallel):  # FSDP1
            with FullyShardedDataParallel.summon_full_params(model, writeback=False):
                yield
        elif hasattr(model, "unshard"):  # FSDP2: wrapped layers gather their own shards in their forward hooks
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
        R@1/R@5 image→text (`i2t_r*`) and text→image (`t2i_r*`), every caption of an image counted as correct.
        Every rank encodes the whole gallery (the same forward passes everywhere) and returns the same numbers."""
        model = self.accelerator.unwrap_model(self.model)
        tokenizer = self.processing_class.tokenizer
        raw = dataset.with_format(None)  # only the id and caption columns: no decoding
        text_to_image, image_to_texts, _ = caption_groups(raw[ID_COLUMNS[modality]])
        tokens = tokenizer(
            list(raw["caption"]), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
        )
        batch_size = self.args.per_device_eval_batch_size
        gallery = dataset.select([rows[0] for rows in image_to_texts])  # one row per image / video
        media = DataLoader(gallery, batch_size=batch_size, collate_fn=SCLDataCollator(tokenizer, label_names=()))
        with self.autocast_smart_context_manager():
            texts = encode_texts(model, tokens["input_ids"], tokens["attention_mask"], batch_size=batch_size)
            images = encode_images(model, media)
        recall = retrieval_recall(itc_similarity(texts, images).cpu(), txt2img=text_to_image, ks=RECALL_KS)
        renamed = {"num_candidates": len(image_to_texts)}
        for k in RECALL_KS:
            renamed[f"i2t_r{k}"] = recall[f"txt_r{k}"]  # image → text ("text retrieval")
            renamed[f"t2i_r{k}"] = recall[f"img_r{k}"]  # text → image ("image retrieval")
        return renamed


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
            results["train"] = trainer.train(resume_from_checkpoint=self.resume_from).metrics
            trainer.save_model()  # model + processor (the `processing_class`)
            trainer.save_state()
        if args.do_eval and self.data.eval:
            results["eval"] = trainer.evaluate()
        for split, metrics in results.items():
            if print_metrics:
                trainer.log_metrics(split, metrics)
            trainer.save_metrics(split, metrics)
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
    setup_logging(training_args, logger)
    resume_from = training_args.resume_from_checkpoint
    if resume_from is None and training_args.do_train and os.path.isdir(training_args.output_dir):
        resume_from = get_last_checkpoint(training_args.output_dir)
        if resume_from is not None:
            logger.warning("Checkpoint found: resuming the run from %s.", resume_from)

    set_seed(training_args.seed)
    with training_args.main_process_first(desc="loading the data"):
        raw = load_raw_pairs(data_args, training_args.seed, model_args.cache_dir)
    tokenizer = caption_tokenizer(model_args, raw, training_args, data_args.max_seq_length)
    model, processor = load_model_and_processor(model_args, tokenizer)
    data = attach_transforms(raw, data_args, processor, model.config)

    trainer = SCLPretrainingTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_dataset() if training_args.do_train else None,
        eval_dataset=data.eval or None,
        modality_sizes=data.modality_sizes,
        max_seq_length=data_args.max_seq_length,
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
