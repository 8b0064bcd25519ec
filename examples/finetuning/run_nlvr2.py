#!/usr/bin/env python
"""Fine-tune SCL on NLVR2: is a statement true of a pair of images? The text is fused with each image (token types 1
and 2) and the two pooled outputs are classified (spec §3.1), with the reference hyper-parameters of spec §3.2.

Data (`--dataset`):
* `jsonl`: `--train_file` / `--validation_file` / `--test_file`, one JSON object per line, either
  `{"left_image": path, "right_image": path, "sentence": str, "label": ...}` (paths relative to the split's image
  folder or absolute), or the official NLVR2 format `{"identifier": "dev-850-0-0", "sentence", "label": "True",
  "directory"?: 42}`, whose images are `<image_dir>/[<directory>/]dev-850-0-img0.png` and `...-img1.png`;
* `synthetic`: pairs of the package's shape scenes with the caption of one of them (true) or of another scene (false);
* anything else: a `datasets` name or folder with two image columns, a sentence column and a label column.

Labels may be booleans, 0/1 or the strings "True"/"False". Evaluation reports accuracy (NLVR2 dev; `--do_predict`
on the test file reports test-P accuracy).
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value, load_dataset
from datasets import Image as ImageFeature
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
from transformers import HfArgumentParser, set_seed

from transformers_scl.data import (
    SCLDataCollator,
    SkipCounter,
    SkipReportCallback,
    decode_image,
    make_synthetic_image_text,
    truncate,
)
from transformers_scl.modeling_scl import SCLForImagesAndTextClassification
from transformers_scl.training import setup_logging, train_evaluate_save

logger = logging.getLogger(__name__)

FEATURES = Features(
    {
        "left_image": ImageFeature(),
        "right_image": ImageFeature(),
        "sentence": Value("string"),
        "label": ClassLabel(names=["False", "True"]),
    }
)


@dataclass
class DataArguments(FinetuningDataArguments):
    dataset: str = field(
        default="jsonl", metadata={"help": "`jsonl` (local files), `synthetic`, or a `datasets` name or folder."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Training jsonl (NLVR2 train.json)."})
    validation_file: str | None = field(default=None, metadata={"help": "Evaluation jsonl (NLVR2 dev.json)."})
    test_file: str | None = field(default=None, metadata={"help": "Test jsonl for --do_predict (test1.json)."})
    train_image_dir: str | None = field(default=None, metadata={"help": "Image folder of the training file."})
    validation_image_dir: str | None = field(default=None, metadata={"help": "Image folder of the evaluation file."})
    test_image_dir: str | None = field(default=None, metadata={"help": "Image folder of the test file."})
    train_split: str = field(default="train", metadata={"help": "`datasets` training split."})
    eval_split: str = field(default="validation", metadata={"help": "`datasets` evaluation split."})
    test_split: str = field(default="test", metadata={"help": "`datasets` split for --do_predict."})
    left_image_column: str = field(default="left_image", metadata={"help": "`datasets` column of the left image."})
    right_image_column: str = field(default="right_image", metadata={"help": "`datasets` column of the right image."})
    sentence_column: str = field(default="sentence", metadata={"help": "`datasets` column of the statement."})
    label_column: str = field(default="label", metadata={"help": "`datasets` column of the label."})
    image_size: int = field(default=288, metadata={"help": "spec §3.2: 288 px for NLVR2."})


@dataclass
class NLVR2TrainingArguments(SCLFinetuningArguments):
    """spec §3.2, NLVR2 column."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Base learning rate."})
    lr_mult_head: float = field(default=10.0, metadata={"help": "Learning-rate multiplier of `nlvr2_classifier`."})
    lr_mult_cross_modal: float = field(default=10.0, metadata={"help": "Learning-rate multiplier of the fusion."})


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return int(value.strip().lower() == "true")
    raise ValueError(f"{where}: label must be a boolean, 0/1 or 'True'/'False', got {value!r}.")


def _image_paths(record: dict, image_dir: str | None, where: str) -> tuple[str, str]:
    if "left_image" in record and "right_image" in record:
        paths = record["left_image"], record["right_image"]
    elif "identifier" in record:
        # Official NLVR2: identifier "split-set-pair-sentence"; the pair's images end in -img0.png / -img1.png.
        prefix = record["identifier"].rsplit("-", 1)[0]
        folder = str(record["directory"]) if "directory" in record else ""
        paths = tuple(os.path.join(folder, f"{prefix}-img{side}.png") for side in (0, 1))
    else:
        raise ValueError(f"{where}: expected `left_image` and `right_image`, or an NLVR2 `identifier`.")
    if image_dir is not None:
        paths = tuple(path if os.path.isabs(path) else os.path.join(image_dir, path) for path in paths)
    return paths


def load_jsonl(path: str, image_dir: str | None) -> Dataset:
    columns: dict[str, list] = {name: [] for name in FEATURES}
    with open(path) as file:
        for line_number, line in enumerate(file, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            record = json.loads(line)
            left, right = _image_paths(record, image_dir, where)
            columns["left_image"].append(left)
            columns["right_image"].append(right)
            columns["sentence"].append(record["sentence"])
            columns["label"].append(parse_label(record.get("label"), where))
    return Dataset.from_dict(columns, features=FEATURES)


def make_synthetic_nlvr2(num_pairs: int, split: str, seed: int, image_size: int, max_objects: int) -> Dataset:
    """Pairs of synthetic scenes with a statement that is the caption of one of them (true) or of a scene of another
    pair (false), half and half. Deciding needs both images: the true caption describes the left or the right one."""
    scenes = make_synthetic_image_text(
        2 * num_pairs, split=split, seed=seed, image_size=image_size, max_objects=max_objects
    ).cast_column("image", ImageFeature(decode=False))  # keep the PNG bytes: no decoding and re-encoding
    images, captions = list(scenes["image"]), list(scenes["caption"])
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for pair in range(num_pairs):
        left, right = 2 * pair, 2 * pair + 1
        label = int(rng.integers(2))
        if label:
            sentence = captions[left if rng.integers(2) else right]
        else:
            while True:  # another pair's scene, whose caption describes neither image of this pair
                other = int(rng.integers(len(captions)))
                if other not in (left, right) and captions[other] not in (captions[left], captions[right]):
                    break
            sentence = captions[other]
        columns["left_image"].append(images[left])
        columns["right_image"].append(images[right])
        columns["sentence"].append(sentence)
        columns["label"].append(label)
    return Dataset.from_dict(columns, features=FEATURES)


def load_hub_split(data_args: DataArguments, split: str, cache_dir: str | None) -> Dataset | None:
    try:
        dataset = load_dataset(data_args.dataset, data_args.dataset_config_name, split=split, cache_dir=cache_dir)
    except ValueError as error:
        if "Unknown split" in str(error):
            return None
        raise
    renames = {
        data_args.left_image_column: "left_image",
        data_args.right_image_column: "right_image",
        data_args.sentence_column: "sentence",
        data_args.label_column: "label",
    }
    dataset = dataset.select_columns(list(renames)).rename_columns(
        {old: new for old, new in renames.items() if old != new}
    )
    if not isinstance(dataset.features["label"], ClassLabel):
        dataset = dataset.map(lambda example: {"label": parse_label(example["label"], split)})
    return dataset.cast(FEATURES)


def load_split(data_args: DataArguments, split: str, seed: int, cache_dir: str | None) -> Dataset | None:
    """`split` is `train`, `validation` or `test`."""
    if data_args.dataset == "synthetic":
        if split == "test":
            return None
        held_out = split != "train"
        size = data_args.synthetic_eval_size if held_out else data_args.synthetic_train_size
        return make_synthetic_nlvr2(
            size,
            "test" if held_out else "train",
            seed + int(held_out),
            max(data_args.image_size, 24),
            data_args.synthetic_max_objects,
        )
    if data_args.dataset == "jsonl":
        path = getattr(data_args, f"{split}_file")
        return load_jsonl(path, getattr(data_args, f"{split}_image_dir")) if path else None
    hub_split = {"train": data_args.train_split, "validation": data_args.eval_split, "test": data_args.test_split}
    return load_hub_split(data_args, hub_split[split], cache_dir)


class ImagePairTransform:
    """Tokenize the statement and turn both images into `pixel_values` (2, 3, H, W) (left, right).

    A pair with an unreadable image is logged, counted (`skip_counter`) and gets `None` pixels, which the collator
    drops, as `MediaTextTransform` does for single images.
    """

    def __init__(self, tokenizer, image_transform, max_length: int, skip_counter: SkipCounter | None = None):
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter("image pairs")

    def apply_to(self, dataset: Dataset) -> Dataset:
        undecoded = ImageFeature(decode=False)  # decode here, so that a bad file reaches the skip logic
        dataset = dataset.cast_column("left_image", undecoded).cast_column("right_image", undecoded)
        return dataset.with_transform(self)

    def _pixels(self, image) -> torch.Tensor:
        if hasattr(self.image_transform, "preprocess"):  # an HF image processor
            return self.image_transform(image, return_tensors="pt")["pixel_values"][0]
        return torch.as_tensor(self.image_transform(image))

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        encoding = self.tokenizer(list(batch["sentence"]), truncation=True, max_length=self.max_length)
        pixel_values = []
        for left, right in zip(batch["left_image"], batch["right_image"]):
            try:
                images = [decode_image(left), decode_image(right)]
            except Exception as error:  # noqa: BLE001 - one unreadable file must not end a long run
                source = next((i.get("path") for i in (left, right) if isinstance(i, dict) and i.get("path")), None)
                self.skip_counter.record_skip(source or "an in-memory image pair", error)
                pixel_values.append(None)
                continue
            self.skip_counter.record_success()
            pixel_values.append(torch.stack([self._pixels(image) for image in images]))
        return {
            "input_ids": encoding["input_ids"],
            "attention_mask": encoding["attention_mask"],
            "pixel_values": pixel_values,
            "labels": list(batch["label"]),
        }


def compute_metrics(eval_prediction) -> dict[str, float]:
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": 100.0 * float(np.mean(np.argmax(logits, axis=-1) == eval_prediction.label_ids))}


# ---------------------------------------------------------------------------------------------------------------------


def main(args: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, NLVR2TrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)
    setup_logging(training_args, logger)
    set_seed(training_args.seed)  # before the model is built: new heads start from the same weights every run

    seed, cache_dir = training_args.seed, model_args.cache_dir
    train = truncate(load_split(data_args, "train", seed, cache_dir), data_args.max_train_samples)
    validation = truncate(load_split(data_args, "validation", seed, cache_dir), data_args.max_eval_samples)
    if training_args.do_train and train is None:
        raise ValueError("--do_train needs training data (--train_file, or a `datasets` train split).")
    if training_args.do_eval and validation is None:
        raise ValueError("--do_eval needs evaluation data (--validation_file, or a `datasets` eval split).")

    # From a pre-training checkpoint the token-type table grows from 2 to 3 rows, row 2 copying row 1 (spec §1.1).
    model = load_model(SCLForImagesAndTextClassification, model_args, data_args.image_size)
    processor = load_processor(model_args, data_args.image_size)

    # spec §3.2: RandAugment + RandomResizedCrop for training (each image of a pair augmented on its own), the
    # processor's square resize for evaluation.
    train_transform = ImagePairTransform(
        processor.tokenizer,
        train_image_transform(data_args.image_size, use_randaugment(data_args.randaugment, data_args.dataset)),
        data_args.max_seq_length,
    )
    eval_transform = ImagePairTransform(processor.tokenizer, processor.image_processor, data_args.max_seq_length)

    trainer = SCLFinetuningTrainer(
        model=model,
        args=training_args,
        train_dataset=train_transform.apply_to(train) if train is not None else None,
        eval_dataset=eval_transform.apply_to(validation) if validation is not None else None,
        data_collator=SCLDataCollator(processor.tokenizer, label_names=("labels",)),
        processing_class=processor,
        compute_metrics=compute_metrics,
        callbacks=[SkipReportCallback(train_transform.skip_counter)],
    )
    metrics = train_evaluate_save(
        trainer,
        training_args,
        {"finetuned_from": model_args.model_name_or_path, "tasks": "nlvr2", "dataset": data_args.dataset},
        num_train_samples=len(train) if train is not None else None,
        num_eval_samples=len(validation) if validation is not None else None,
    )
    if training_args.do_predict:
        test = load_split(data_args, "test", seed, cache_dir)
        if test is None:
            raise ValueError("--do_predict needs --test_file (or a `datasets` test split).")
        test_metrics = trainer.predict(eval_transform.apply_to(test), metric_key_prefix="test").metrics
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)
    return metrics


if __name__ == "__main__":
    main()
    # Under torchrun / accelerate launch, tear the process group down: gloo's threads abort the exit otherwise.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
