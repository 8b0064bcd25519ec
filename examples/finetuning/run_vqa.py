#!/usr/bin/env python
"""Fine-tune SCL for visual question answering (VQAv2): a classifier over the answer vocabulary trained with BCE
against VQA soft scores (spec §3.1), with the reference hyper-parameters of spec §3.2 as defaults.

Data (`--dataset`):
* `vqav2`: the official question/annotation JSON files and COCO image folders (`--train_questions_file`, ...).
  `--validation_holdout 1000` reproduces the reference protocol: train on train + val minus its last 1000
  questions, evaluate on those 1000. `--test_questions_file` with `--do_predict` writes a test-dev submission.
* `synthetic`: the package's synthetic shape scenes with colour/shape/count/yes-no questions.
* anything else: a `datasets` name or folder with `image`, `question` and `answers` columns (a list of the human
  answers, strings or `{"answer": ...}` dicts), or already in the package's `answer_ids`/`answer_scores` format.

Example (the reference recipe, 8 GPUs x 16 = 128 per step x 4 accumulation = 512):

    torchrun --nproc_per_node 8 examples/finetuning/run_vqa.py --model_name_or_path scl-pretrained \
        --dataset vqav2 --train_questions_file v2_OpenEnded_mscoco_train2014_questions.json ... \
        --validation_holdout 1000 --per_device_train_batch_size 16 --gradient_accumulation_steps 4 \
        --do_train --do_eval --eval_strategy epoch --bf16 --output_dir scl-vqav2
"""

import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, List, Value, concatenate_datasets, load_dataset
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
from transformers import HfArgumentParser, Trainer, set_seed

from transformers_scl.data import (
    MediaTextTransform,
    SCLVQACollator,
    SkipReportCallback,
    answer_vocabulary,
    build_answer_vocabulary,
    load_vqa,
    make_synthetic_vqa,
    truncate,
    vqa_answer_features,
    vqa_soft_score,
)
from transformers_scl.metrics import normalize_vqa_answer, vqa_accuracy
from transformers_scl.modeling_scl import SCLForQuestionAnswering
from transformers_scl.training import setup_logging, train_evaluate_save

logger = logging.getLogger(__name__)


@dataclass
class DataArguments(FinetuningDataArguments):
    dataset: str = field(
        default="vqav2",
        metadata={"help": "`vqav2` (local JSON files), `synthetic`, or a `datasets` name or folder."},
    )
    train_split: str = field(default="train", metadata={"help": "`datasets` split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "`datasets` split to evaluate on."})
    train_questions_file: str | None = field(default=None, metadata={"help": "VQAv2 train questions JSON."})
    train_annotations_file: str | None = field(default=None, metadata={"help": "VQAv2 train annotations JSON."})
    train_image_dir: str | None = field(default=None, metadata={"help": "Folder of the train images (train2014)."})
    validation_questions_file: str | None = field(default=None, metadata={"help": "VQAv2 val questions JSON."})
    validation_annotations_file: str | None = field(default=None, metadata={"help": "VQAv2 val annotations JSON."})
    validation_image_dir: str | None = field(default=None, metadata={"help": "Folder of the val images (val2014)."})
    test_questions_file: str | None = field(default=None, metadata={"help": "VQAv2 test(-dev) questions JSON."})
    test_image_dir: str | None = field(default=None, metadata={"help": "Folder of the test images (test2015)."})
    image_path_template: str = field(
        default="COCO_{data_subtype}_{image_id:012d}.jpg",
        metadata={"help": "Image file name, formatted with `image_id` and the questions file's `data_subtype`."},
    )
    validation_holdout: int = field(
        default=0,
        metadata={
            "help": "If > 0, train on train + validation minus its last N questions and evaluate on those N (spec "
            "§3.2: 1000, `vqav2_rest_val`). 0 evaluates on the whole validation set."
        },
    )
    min_answer_count: int = field(
        default=9, metadata={"help": "Answers given as majority answer this often form the vocabulary (3129)."}
    )
    image_column: str = field(default="image", metadata={"help": "`datasets` image column."})
    question_column: str = field(default="question", metadata={"help": "`datasets` question column."})
    answers_column: str = field(default="answers", metadata={"help": "`datasets` column of the human answers."})
    answer_type_column: str = field(default="answer_type", metadata={"help": "Answer type column, if any."})
    synthetic_train_size: int = field(default=4000, metadata={"help": "Synthetic training questions."})
    synthetic_eval_size: int = field(default=500, metadata={"help": "Synthetic evaluation questions."})
    image_size: int = field(default=384, metadata={"help": "spec §3.2: 384 px for VQAv2."})


@dataclass
class VQATrainingArguments(SCLFinetuningArguments):
    """spec §3.2, VQAv2 column."""

    learning_rate: float = field(default=5e-6, metadata={"help": "Base learning rate."})
    lr_mult_head: float = field(default=50.0, metadata={"help": "Learning-rate multiplier of `vqa_classifier`."})
    lr_mult_cross_modal: float = field(default=10.0, metadata={"help": "Learning-rate multiplier of the fusion."})


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def load_vqav2(data_args: DataArguments, training_args) -> tuple[Dataset | None, Dataset | None, list[str]]:
    annotation_files = [f for f in (data_args.train_annotations_file, data_args.validation_annotations_file) if f]
    if not annotation_files:
        raise ValueError("--dataset vqav2 needs --train_annotations_file and/or --validation_annotations_file.")
    # spec §3.2: the 3129-answer vocabulary comes from the train and val annotations together.
    vocabulary = build_answer_vocabulary(annotation_files, min_count=data_args.min_answer_count)
    logger.info(f"Answer vocabulary: {len(vocabulary)} answers given at least {data_args.min_answer_count} times.")

    def load(questions, annotations, image_dir):
        return load_vqa(
            questions,
            annotations,
            image_root=image_dir,
            image_path_template=data_args.image_path_template,
            answer_vocabulary=vocabulary,
        )

    train = validation = None
    if data_args.train_questions_file:
        train = load(data_args.train_questions_file, data_args.train_annotations_file, data_args.train_image_dir)
    if data_args.validation_questions_file:
        validation = load(
            data_args.validation_questions_file, data_args.validation_annotations_file, data_args.validation_image_dir
        )
    if data_args.validation_holdout:
        if validation is None or len(validation) <= data_args.validation_holdout:
            raise ValueError("--validation_holdout needs validation files with more questions than the holdout.")
        cut = len(validation) - data_args.validation_holdout
        trainable = validation.select(range(cut))
        train = trainable if train is None else concatenate_datasets([train, trainable])
        validation = validation.select(range(cut, len(validation)))
    return train, validation, vocabulary


def _human_answers(value) -> list[str]:
    """Human answers as normalised strings, from strings or VQAv2-style `{"answer": ...}` dicts."""
    if value is None:
        return []
    return [normalize_vqa_answer(a["answer"] if isinstance(a, dict) else a) for a in value]


def add_answer_targets(dataset: Dataset, vocabulary: list[str], answers_column: str) -> Dataset:
    """Add the package's `answer_ids` / `answer_scores` (VQA soft scores over `vocabulary`) to a `datasets` set."""
    label2id = {answer: index for index, answer in enumerate(vocabulary)}

    def targets(example):
        answers = _human_answers(example[answers_column])
        counts = Counter(a for a in answers if a in label2id)
        pairs = sorted((label2id[a], vqa_soft_score(c, len(answers))) for a, c in counts.items())
        return {
            "answers": answers,
            "answer_ids": [label for label, _ in pairs],
            "answer_scores": [score for _, score in pairs],
        }

    features = Features({**dataset.features, **vqa_answer_features(vocabulary), "answers": List(Value("string"))})
    return dataset.map(targets, features=features, desc="VQA soft scores")


def load_hub_vqa(data_args: DataArguments, model_args) -> tuple[Dataset | None, Dataset | None, list[str]]:
    raw = load_dataset(data_args.dataset, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
    if not isinstance(raw, DatasetDict):
        raise ValueError(f"{data_args.dataset} did not load as a DatasetDict with named splits.")
    train = raw[data_args.train_split] if data_args.train_split in raw else None
    validation = raw[data_args.eval_split] if data_args.eval_split in raw else None
    splits = [split for split in (train, validation) if split is not None]
    if not splits:
        raise ValueError(f"Neither split {data_args.train_split!r} nor {data_args.eval_split!r} in {list(raw)}.")
    renames = {data_args.image_column: "image", data_args.question_column: "question"}
    if data_args.answer_type_column in splits[0].column_names:
        renames[data_args.answer_type_column] = "answer_type"
    renames = {old: new for old, new in renames.items() if old != new}
    if renames:
        train = train.rename_columns(renames) if train is not None else None
        validation = validation.rename_columns(renames) if validation is not None else None
        splits = [split for split in (train, validation) if split is not None]
    if "answer_ids" in splits[0].column_names:  # already in the package's format
        return train, validation, answer_vocabulary(splits[0])
    if data_args.answers_column not in splits[0].column_names:
        raise ValueError(
            f"Column {data_args.answers_column!r} (the human answers) not in {splits[0].column_names}; set "
            "--answers_column."
        )
    majority = [
        {"multiple_choice_answer": Counter(answers).most_common(1)[0][0]}
        for split in splits
        for answers in map(_human_answers, split[data_args.answers_column])
        if answers
    ]
    vocabulary = build_answer_vocabulary(majority, min_count=data_args.min_answer_count)
    if train is not None:
        train = add_answer_targets(train, vocabulary, data_args.answers_column)
    if validation is not None:
        validation = add_answer_targets(validation, vocabulary, data_args.answers_column)
    return train, validation, vocabulary


def load_data(data_args: DataArguments, model_args, training_args):
    if data_args.dataset == "synthetic":
        size = data_args.image_size
        kwargs = {"image_size": size, "max_objects": data_args.synthetic_max_objects}
        seed = training_args.seed
        train = make_synthetic_vqa(data_args.synthetic_train_size, split="train", seed=seed, **kwargs)
        validation = make_synthetic_vqa(data_args.synthetic_eval_size, split="test", seed=seed + 1, **kwargs)
        return train, validation, answer_vocabulary(train)
    if data_args.dataset == "vqav2":
        return load_vqav2(data_args, training_args)
    return load_hub_vqa(data_args, model_args)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


class VQATrainer(SCLFinetuningTrainer):
    """Keeps two numbers per evaluated question instead of the (N, num_answers) logits and soft scores: the argmax
    answer id (`predictions`) and its soft score (`label_ids`), which is all VQA accuracy needs."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if logits is None:
            return loss, logits, labels
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = logits.argmax(dim=-1)
        if labels is None:
            return loss, predicted, None
        return loss, predicted, labels.gather(-1, predicted[:, None]).squeeze(-1)


def build_compute_metrics(id2label: dict[int, str], eval_dataset: Dataset | None):
    """`vqa_score`: mean soft score of the predicted answers (the training-time metric of the reference);
    `accuracy` (+ per answer type): the official VQA accuracy against the human answers, when the data has them."""
    answers = answer_types = None
    if eval_dataset is not None and "answers" in eval_dataset.column_names:
        answers = eval_dataset["answers"]
        if "answer_type" in eval_dataset.column_names:
            answer_types = eval_dataset["answer_type"]
            if any(answer_type is None for answer_type in answer_types):
                answer_types = None

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predicted = np.asarray(eval_prediction.predictions).reshape(-1)
        metrics = {"vqa_score": 100.0 * float(np.mean(eval_prediction.label_ids))}
        if answers is not None and len(answers) == len(predicted) and all(answers):
            result = vqa_accuracy([id2label[int(i)] for i in predicted], answers, answer_types)
            metrics["accuracy"] = result["accuracy"]
            for answer_type, value in result.get("accuracy_per_answer_type", {}).items():
                metrics[f"accuracy_{answer_type.replace('/', '_').replace(' ', '_')}"] = value
        elif answers is not None:
            logger.warning("Some evaluation images were skipped; reporting `vqa_score` only.")
        return metrics

    return compute_metrics


def majority_answer_accuracy(train: Dataset, validation: Dataset, vocabulary: list[str]) -> float:
    """Chance level: official VQA accuracy of always answering the most frequent training answer."""
    counts = Counter(
        ids[int(np.argmax(scores))] for ids, scores in zip(train["answer_ids"], train["answer_scores"]) if ids
    )
    answer = vocabulary[counts.most_common(1)[0][0]]
    return vqa_accuracy([answer] * len(validation), validation["answers"])["accuracy"]


def write_predictions(trainer: Trainer, test_dataset, raw_test: Dataset, id2label, output_dir: str) -> str:
    """The VQAv2 evaluation-server format: `[{"question_id": int, "answer": str}]` (the reference's
    `vqa_submit_*.json`, spec §3.1)."""
    trainer.compute_metrics = None  # test questions have no answers
    predicted = np.asarray(trainer.predict(test_dataset).predictions).reshape(-1)
    if len(predicted) != len(raw_test):
        raise RuntimeError(f"{len(raw_test) - len(predicted)} test images could not be read; see the warnings.")
    submission = [
        {"question_id": int(question_id), "answer": id2label[int(index)]}
        for question_id, index in zip(raw_test["question_id"], predicted)
    ]
    path = os.path.join(output_dir, "vqa_submission.json")
    with open(path, "w") as file:
        json.dump(submission, file)
    return path


# ---------------------------------------------------------------------------------------------------------------------


def main(args: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, VQATrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)
    setup_logging(training_args, logger)
    set_seed(training_args.seed)  # before the model is built: new heads start from the same weights every run

    train, validation, vocabulary = load_data(data_args, model_args, training_args)
    train = truncate(train, data_args.max_train_samples)
    validation = truncate(validation, data_args.max_eval_samples)
    if training_args.do_train and train is None:
        raise ValueError("--do_train needs training data.")
    if training_args.do_eval and validation is None:
        raise ValueError("--do_eval needs evaluation data.")

    id2label = dict(enumerate(vocabulary))
    model = load_model(
        SCLForQuestionAnswering,
        model_args,
        data_args.image_size,
        num_labels=len(vocabulary),
        id2label=id2label,
        label2id={answer: index for index, answer in id2label.items()},
    )
    processor = load_processor(model_args, data_args.image_size)

    # spec §3.2: RandAugment + RandomResizedCrop for training, the processor's square resize for evaluation.
    train_transform = MediaTextTransform(
        processor,
        image_transform=train_image_transform(
            data_args.image_size, use_randaugment(data_args.randaugment, data_args.dataset)
        ),
        text_column="question",
        max_length=data_args.max_seq_length,
    )
    eval_transform = MediaTextTransform(processor, text_column="question", max_length=data_args.max_seq_length)
    train_dataset = train_transform.apply_to(train) if train is not None else None
    eval_dataset = eval_transform.apply_to(validation) if validation is not None else None

    trainer = VQATrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SCLVQACollator(processor.tokenizer, num_labels=len(vocabulary)),
        processing_class=processor,
        compute_metrics=build_compute_metrics(id2label, validation),
        callbacks=[SkipReportCallback(train_transform.skip_counter)],
    )
    metrics = train_evaluate_save(
        trainer,
        training_args,
        {
            "finetuned_from": model_args.model_name_or_path,
            "tasks": "visual-question-answering",
            "dataset": data_args.dataset,
        },
        num_train_samples=len(train) if train is not None else None,
        num_eval_samples=len(validation) if validation is not None else None,
    )
    if training_args.do_eval and train is not None and "answers" in validation.column_names:
        metrics["eval_majority_answer_accuracy"] = majority_answer_accuracy(train, validation, vocabulary)
        logger.info(f"Majority-answer baseline: {metrics['eval_majority_answer_accuracy']:.2f}")

    if training_args.do_predict and data_args.test_questions_file:
        raw_test = load_vqa(
            data_args.test_questions_file,
            image_root=data_args.test_image_dir,
            image_path_template=data_args.image_path_template,
            answer_vocabulary=vocabulary,
        )
        path = write_predictions(
            trainer, eval_transform.apply_to(raw_test), raw_test, id2label, training_args.output_dir
        )
        logger.info(f"Wrote the test submission to {path}")
    return metrics


if __name__ == "__main__":
    main()
    # Under torchrun / accelerate launch, tear the process group down: gloo's threads abort the exit otherwise.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
