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

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, HfArgumentParser, TrainerCallback, set_seed

from transformers_scl.configuration_scl import SCLConfig, parse_config_overrides
from transformers_scl.data import (
    PretrainingDatasets,
    SCLPretrainingCollator,
    SeededDataset,
    SkipReportCallback,
    load_caption_pairs,
    make_synthetic_pairs,
    render_video,
    seeded_rank_batch_sampler,
    split_off_held_out,
    train_caption_tokenizer,
    truncate,
)
from transformers_scl.modeling_scl import SCLForPreTraining
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.retrieval import zero_shot_recall
from transformers_scl.training import (
    SCLDataArguments,
    SCLTrainer,
    SCLTrainingArguments,
    full_parameters,
    setup_logging,
    train_evaluate_save,
)

logger = logging.getLogger(__name__)

ID_COLUMNS = {"image": "image_id", "video": "video_id"}


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


def attach_transforms(raw: dict[str, tuple], data_args: DataArguments, processor, config) -> PretrainingDatasets:
    """Training rows get the pre-training augmentation, held-out rows the processor's transform (`from_pairs`)."""
    flip = data_args.horizontal_flip
    if flip is None:
        flip = all(source != "synthetic" for *_, source in raw.values())
    synthetic_video = "video" in raw and raw["video"][2] == "synthetic"  # stored as specs, drawn when read
    return PretrainingDatasets.from_pairs(
        {modality: (train, held_out) for modality, (train, held_out, _) in raw.items()},
        processor,
        image_size=config.image_size,
        num_frames=config.num_frames,
        horizontal_flip=flip,
        max_length=data_args.max_seq_length,
        load_media={"video": render_video} if synthetic_video else None,
    )


def build_datasets(data_args: DataArguments, processor, config, seed: int, cache_dir: str | None = None):
    """Training and held-out rows of every requested modality, with the train / eval transforms attached."""
    return attach_transforms(load_raw_pairs(data_args, seed, cache_dir), data_args, processor, config)


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def load_model_and_processor(model_args: ModelArguments, tokenizer=None) -> tuple[SCLForPreTraining, SCLProcessor]:
    """The model (from an SCL checkpoint, from CLIP + RoBERTa towers, or from scratch) and a matching processor.
    A given `tokenizer` (e.g. trained on the captions) sets the vocab size of a model trained from scratch."""
    overrides = parse_config_overrides(model_args.config_overrides)
    for name in ("image_size", "num_frames"):
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    hub = {"cache_dir": model_args.cache_dir}

    if model_args.model_name_or_path:
        config = SCLConfig.from_pretrained(model_args.model_name_or_path, **hub).with_overrides(overrides)
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
            overrides["text_config"] = {**overrides.get("text_config", {}), "vocab_size": len(tokenizer)}
        config = SCLConfig.from_pretrained(model_args.config_name, **hub) if model_args.config_name else SCLConfig()
        model = SCLForPreTraining(config.with_overrides(overrides))
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
        processor = SCLProcessor.from_config(tokenizer, model.config)

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

    * `get_train_dataloader`: single-modality batches from a mix of image and video data, sliced per rank, each
      example drawn under a seed of its own (`seeded_rank_batch_sampler`), so the data pipeline never touches the
      global RNG. Together with `Trainer`'s checkpointed RNG state (which the model's ITM sampling, patch dropping and
      dropout draw from), a resumed run continues the uninterrupted one exactly, with any number of DataLoader workers.
    * `evaluate`: the held-out losses and zero-shot ITC retrieval R@1/R@5 in both directions per modality
      (`transformers_scl.retrieval.zero_shot_recall`), under a fixed seed and without touching training's RNG.
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
        sampler = seeded_rank_batch_sampler(
            self.modality_sizes, args.train_batch_size, args.world_size, args.process_index, seed=seed
        )
        # A plain DataLoader: Accelerate would re-shard the already rank-aware batch sampler.
        return DataLoader(
            SeededDataset(self.train_dataset),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        eval_sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(eval_sets, dict):
            raise ValueError("SCLPretrainingTrainer evaluates a dict {'image': dataset, 'video': dataset}.")
        model = self.model_wrapped  # the DDP / FSDP module once training has started, else the model
        was_training = model.training
        model.eval()
        # Held-out masks and ITM pairs are random: draw them from a fixed seed and leave training's RNG untouched, so
        # results do not depend on how often or when evaluation runs.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.args.seed)
            losses = self.evaluate_loss_terms(eval_sets)
            metrics = {f"{metric_key_prefix}_{name}": value for name, value in losses.items()}
            with full_parameters(model), self.autocast_smart_context_manager():
                for modality, dataset in eval_sets.items():
                    recall = zero_shot_recall(
                        self.accelerator.unwrap_model(self.model),
                        dataset,
                        self.processing_class.tokenizer,
                        id_column=ID_COLUMNS[modality],
                        batch_size=self.args.per_device_eval_batch_size,
                        max_length=self.max_seq_length,
                    )
                    metrics.update({f"{metric_key_prefix}_{modality}_{name}": value for name, value in recall.items()})
        model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


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
    data: PretrainingDatasets
    data_args: DataArguments

    def run(self, print_metrics: bool = True) -> dict[str, float]:
        """Train and/or evaluate as the arguments ask; returns the train and eval metrics."""
        sources = list(dict.fromkeys(s for s in (self.data_args.image_dataset, self.data_args.video_dataset) if s))
        card = {
            "tasks": "vision-language-pretraining",
            "tags": ["scl", "image-text", "video-text"],
            "dataset": sources,
        }
        return train_evaluate_save(self.trainer, self.trainer.args, card, print_metrics=print_metrics)


def prepare(args: Sequence[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> PretrainingJob:
    """Parse `args` (default: the command line) and build the model, the processor, the data and the trainer."""
    model_args, data_args, training_args = parse_args(args)
    setup_logging(training_args, logger)
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
    return PretrainingJob(trainer=trainer, data=data, data_args=data_args)


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
