#!/usr/bin/env python
"""Fine-tune SCL for image–text or video–text retrieval (Flickr30K, COCO, MSRVTT) and evaluate recall@1/5/10.

Training (spec §3.1): each image is ranked by the rank head against its own caption and `--num_negatives` (15)
other captions of the batch, with cross-entropy over those 16 scores, plus `--itc_weight` x the ITC loss.
Evaluation (`transformers_scl.retrieval`): every image and caption is encoded once, the ITC similarity short-lists
each query's top `--retrieval_k` candidates, and the rank head re-ranks them (`--full_ranking` scores every pair, the
reference's protocol). It reports R@1/5/10 image→text (`txt_r*`) and text→image (`img_r*`), and the ITC-only recall.

Data (`--dataset`):
* a Karpathy-split JSON file (`dataset_coco.json`, `dataset_flickr30k.json`) with `--image_root`;
* a folder with `<split>/metadata.jsonl` (imagefolder style: `file_name` + `caption`, one string or a list), of
  images or, with `--modality video`, of videos (MSRVTT: one folder per split, 20 captions per training video);
* a `datasets` name or folder with an image (or video path) column and a caption column;
* `synthetic`: the package's shape scenes (or moving-shape clips with `--modality video`).
"""

import logging
import os
import sys
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from finetuning_utils import (
    FinetuningDataArguments,
    ModelArguments,
    SCLFinetuningArguments,
    SCLFinetuningTrainer,
    load_model,
    load_processor,
    train_image_transform,
    use_randaugment,
)
from torch.utils.data import DataLoader
from transformers import HfArgumentParser, set_seed

from transformers_scl.data import (
    MediaTextTransform,
    SCLDataCollator,
    SkipReportCallback,
    caption_groups,
    load_caption_pairs,
    make_synthetic_pairs,
    render_video,
    truncate,
)
from transformers_scl.modeling_scl import SCLForImageTextRetrieval
from transformers_scl.retrieval import evaluate_retrieval
from transformers_scl.training import setup_logging, train_evaluate_save
from transformers_scl.transforms import VideoTrainTransform

logger = logging.getLogger(__name__)

ID_COLUMNS = {"image": "image_id", "video": "video_id"}


@dataclass(kw_only=True)
class DataArguments(FinetuningDataArguments):
    dataset: str = field(
        metadata={
            "help": "A Karpathy JSON file, a folder with <split>/metadata.jsonl, a `datasets` name/folder, or "
            "`synthetic`."
        },
    )
    modality: str = field(default="image", metadata={"help": "`image` or `video`."})
    image_root: str | None = field(default=None, metadata={"help": "Image folder of a Karpathy JSON file."})
    train_split: str = field(
        default="train", metadata={"help": "Training split(s), comma-separated (COCO: `train,restval`)."}
    )
    eval_split: str = field(default="test", metadata={"help": "Evaluation split (Karpathy test: 1k / 5k images)."})
    media_column: str | None = field(
        default=None, metadata={"help": "`datasets` image/video column (default: `image` / `video`)."}
    )
    caption_column: str = field(default="caption", metadata={"help": "Caption column (a string or a list)."})
    id_column: str | None = field(
        default=None, metadata={"help": "`datasets` column identifying an image/video (default: the row)."}
    )
    synthetic_train_size: int = field(default=2000, metadata={"help": "Synthetic training scenes or clips."})
    synthetic_eval_size: int = field(default=200, metadata={"help": "Synthetic evaluation scenes or clips."})
    synthetic_video_frames: int = field(default=8, metadata={"help": "Frames of each synthetic clip."})
    image_size: int = field(default=384, metadata={"help": "spec §3.2: 384 px (Flickr30K, COCO), 224 px (video)."})
    num_frames: int = field(default=4, metadata={"help": "Frames sampled per video (spec §1.2: 4)."})

    def __post_init__(self):
        if self.modality not in ID_COLUMNS:
            raise ValueError(f"--modality must be `image` or `video`, got {self.modality!r}.")


@dataclass
class RetrievalTrainingArguments(SCLFinetuningArguments):
    """spec §3.2, Flickr30K column (COCO: --lr_mult_head 5 --lr_mult_cross_modal 5; MSRVTT: also
    --warmup_steps 0.05 --itc_weight 1.0)."""

    learning_rate: float = field(default=5e-6, metadata={"help": "Base learning rate."})
    num_negatives: int = field(
        default=15, metadata={"help": "spec §3.1: negative captions (of the same batch) ranked against each image."}
    )
    itc_weight: float | None = field(
        default=None, metadata={"help": "Weight of the ITC loss (default: the config's, 0.5; MSRVTT uses 1.0)."}
    )
    retrieval_k: int = field(default=128, metadata={"help": "ITC candidates re-ranked per query (COCO: 256)."})
    full_ranking: bool = field(default=False, metadata={"help": "Re-rank every pair (the reference's protocol)."})
    # Each image needs other captions of its batch as negatives: never train on a last batch of one.
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete batch."})


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def load_pairs(data_args: DataArguments, split: str, seed: int, cache_dir: str | None) -> Dataset:
    """One row per (image or video, caption) with an `image_id` / `video_id` column."""
    if data_args.dataset == "synthetic":
        held_out = split != "train"
        return make_synthetic_pairs(
            data_args.modality,
            data_args.synthetic_eval_size if held_out else data_args.synthetic_train_size,
            split="test" if held_out else "train",
            seed=seed + int(held_out),
            image_size=max(data_args.image_size, 32),  # the smallest the synthetic clips allow
            num_frames=data_args.synthetic_video_frames,
            max_objects=data_args.synthetic_max_objects,
        )
    pairs = load_caption_pairs(
        data_args.dataset,
        data_args.modality,
        split,
        train_split=data_args.train_split,
        image_root=data_args.image_root,
        media_column=data_args.media_column,
        caption_column=data_args.caption_column,
        id_column=data_args.id_column,
        config_name=data_args.dataset_config_name,
        cache_dir=cache_dir,
    )
    if pairs is None:
        raise ValueError(f"{data_args.dataset} has no split {split!r}.")
    return pairs


class RetrievalCollator(SCLDataCollator):
    """Pads and stacks, and asks the model for its training loss (`SCLForImageTextRetrieval` returns none
    otherwise)."""

    def __call__(self, examples):
        return {**super().__call__(examples), "return_loss": True}


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


class RetrievalTrainer(SCLFinetuningTrainer):
    """`evaluate` runs two-stage retrieval over the evaluation gallery instead of a loss loop."""

    def __init__(self, *args, modality: str = "image", max_seq_length: int = 50, **kwargs):
        super().__init__(*args, **kwargs)
        self.modality = modality
        self.max_seq_length = max_seq_length

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        gallery = eval_dataset if eval_dataset is not None else self.eval_dataset  # pairs, eval transform attached
        if gallery is None:
            raise ValueError("Retrieval evaluation needs an evaluation split (--eval_split).")
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        result, num_images, chance = self._retrieve(model, gallery)
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in result.metrics.items()}
        metrics.update({f"{metric_key_prefix}_itc_{name}": value for name, value in result.itc_metrics.items()})
        metrics[f"{metric_key_prefix}_num_images"] = num_images
        metrics[f"{metric_key_prefix}_chance_img_r1"] = chance["img_r1"]
        metrics[f"{metric_key_prefix}_chance_txt_r1"] = chance["txt_r1"]
        metrics[f"{metric_key_prefix}_runtime"] = result.timings["total"]
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _retrieve(self, model, gallery: Dataset):
        raw = gallery.with_format(None)  # without the transform: only the id and caption columns are read
        text_to_image, image_to_texts, _ = caption_groups(raw[ID_COLUMNS[self.modality]])
        captions = list(raw["caption"])
        tokens = self.processing_class.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
        )
        first_rows = gallery.select([rows[0] for rows in image_to_texts])
        pixel_key = "pixel_values" if self.modality == "image" else "pixel_values_videos"

        def stack_pixels(examples):
            missing = [i for i, example in enumerate(examples) if example[pixel_key] is None]
            if missing:
                raise RuntimeError("Evaluation images could not be read (see the warnings); fix the gallery.")
            return torch.stack([torch.as_tensor(example[pixel_key]) for example in examples])

        images = DataLoader(
            first_rows,
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=stack_pixels,
            num_workers=self.args.dataloader_num_workers,
        )
        with self.autocast_smart_context_manager():
            result = evaluate_retrieval(
                model,
                tokens["input_ids"],
                tokens["attention_mask"],
                images,
                txt2img=text_to_image,
                k=self.args.retrieval_k,
                full_ranking=self.args.full_ranking,
                text_batch_size=self.args.per_device_eval_batch_size,
                image_batch_size=self.args.per_device_eval_batch_size,
                pair_batch_size=self.args.per_device_eval_batch_size,
                progress=not self.args.disable_tqdm,
            )
        # Chance R@1: a random ranking puts one of a query's right answers first with this probability.
        num_images, num_texts = len(image_to_texts), len(captions)
        chance = {
            "img_r1": 100.0 / num_images,
            "txt_r1": 100.0 * sum(len(rows) for rows in image_to_texts) / num_images / num_texts,
        }
        return result, num_images, chance


# ---------------------------------------------------------------------------------------------------------------------


def main(args: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, RetrievalTrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)
    setup_logging(training_args, logger)
    set_seed(training_args.seed)  # before the model is built: new heads start from the same weights every run
    modality = data_args.modality

    overrides = {"num_retrieval_negatives": training_args.num_negatives}
    if training_args.itc_weight is not None:
        overrides["itc_weight"] = training_args.itc_weight
    if modality == "video":
        overrides["num_frames"] = data_args.num_frames
    model = load_model(SCLForImageTextRetrieval, model_args, data_args.image_size, **overrides)
    processor = load_processor(model_args, data_args.image_size, num_frames=data_args.num_frames)

    common = {
        "modality": modality,
        "max_length": data_args.max_seq_length,
        "load_media": render_video if data_args.dataset == "synthetic" and modality == "video" else None,
    }
    train_transform = train_dataset = gallery = None
    if training_args.do_train:
        # spec §3.2: RandAugment + RandomResizedCrop for training (clips: random segments, one augmentation per clip).
        augmentation = train_image_transform(
            data_args.image_size, use_randaugment(data_args.randaugment, data_args.dataset)
        )
        if modality == "video":
            augmentation = VideoTrainTransform(data_args.num_frames, augmentation)
        train_transform = MediaTextTransform(processor, **{f"{modality}_transform": augmentation}, **common)
        train_pairs = load_pairs(data_args, data_args.train_split, training_args.seed, model_args.cache_dir)
        train_dataset = train_transform.apply_to(truncate(train_pairs, data_args.max_train_samples))
    if training_args.do_eval or training_args.eval_strategy != "no":
        # Evaluation: the processor's square resize; videos sampled uniformly (spec §1.2 `'uniform'`).
        pixel_kwargs = {"frame_sampling": "uniform"} if modality == "video" else None
        eval_transform = MediaTextTransform(processor, pixel_kwargs=pixel_kwargs, **common)
        eval_pairs = load_pairs(data_args, data_args.eval_split, training_args.seed, model_args.cache_dir)
        gallery = eval_transform.apply_to(truncate(eval_pairs, data_args.max_eval_samples))

    trainer = RetrievalTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=RetrievalCollator(processor.tokenizer, label_names=()),
        processing_class=processor,
        callbacks=[SkipReportCallback(train_transform.skip_counter)] if train_transform else None,
        eval_dataset=gallery,
        modality=modality,
        max_seq_length=data_args.max_seq_length,
    )
    task = "image-text-retrieval" if modality == "image" else "video-text-retrieval"
    return train_evaluate_save(
        trainer,
        training_args,
        {"finetuned_from": model_args.model_name_or_path, "tasks": task, "dataset": data_args.dataset},
    )


if __name__ == "__main__":
    main()
    # Under torchrun / accelerate launch, tear the process group down: gloo's threads abort the exit otherwise.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
