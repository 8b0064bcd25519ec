"""VQAv2-style question answering data: the answer vocabulary, soft-score targets and a loader (spec §3).

The answer format is shared by every VQA data set of the package (the VQAv2 loader and the synthetic VQA data):

* `answer_ids`: `List(ClassLabel(names=vocabulary))`, the vocabulary answers that some human gave;
* `answer_scores`: `List(float32)`, the soft score of each of them.

The vocabulary travels with the data set in its features, so `answer_vocabulary(dataset)` gives `id2label` for the
model config, and `SCLVQACollator` turns the two columns into the dense `(batch, num_labels)` BCE targets.
"""

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from datasets import ClassLabel, Dataset, Features, IterableDataset, List, Value
from datasets import Image as ImageFeature

from ..metrics.vqa import normalize_vqa_answer

__all__ = [
    "answer_vocabulary",
    "build_answer_vocabulary",
    "load_vqa",
    "vqa_answer_features",
    "vqa_soft_score",
]

# spec §3: VQAv2 answers given as the majority answer at least 9 times give the 3129-way classifier.
DEFAULT_MIN_ANSWER_COUNT = 9


def vqa_answer_features(vocabulary: Sequence[str]) -> dict[str, Any]:
    """The `answer_ids` / `answer_scores` features over an answer vocabulary (index = label id)."""
    return {
        "answer_ids": List(ClassLabel(names=list(vocabulary))),
        "answer_scores": List(Value("float32")),
    }


def answer_vocabulary(dataset: Dataset | IterableDataset) -> list[str]:
    """The answer vocabulary (`id2label` as a list) stored in a VQA data set's `answer_ids` feature."""
    features = dataset.features
    if features is None or "answer_ids" not in features:
        raise ValueError(
            "This data set has no `answer_ids` feature; build it with `load_vqa` or `make_synthetic_vqa` "
            f"(columns: {dataset.column_names})."
        )
    return list(features["answer_ids"].feature.names)


def vqa_soft_score(count: int, num_answers: int = 10, *, leave_one_out: bool = True) -> float:
    """Target score of an answer given by `count` of the `num_answers` humans.

    With `leave_one_out=True` this is the official VQA accuracy the answer would earn (mean over the leave-one-out
    subsets of `min(1, matches / 3)`): 0, 0.3, 0.6, 0.9, 1 for 0, 1, 2, 3, >=4 of 10 humans, the `get_score` targets
    of ViLT/METER that SCL inherits. `leave_one_out=False` gives the simplification `min(1, count / 3)`.
    """
    if not 0 <= count <= num_answers:
        raise ValueError(f"count must be between 0 and num_answers={num_answers}, got {count}.")
    if not leave_one_out or num_answers < 2:
        return min(1.0, count / 3)
    # Leaving out one of the `count` agreeing humans leaves count - 1 matches, leaving out any other leaves count.
    return (count * min(1.0, (count - 1) / 3) + (num_answers - count) * min(1.0, count / 3)) / num_answers


def _read_json_list(path: str | os.PathLike, key: str) -> list[dict]:
    with open(path) as file:
        content = json.load(file)
    if not isinstance(content, dict) or key not in content:
        raise ValueError(f"{path} is not a VQAv2 {key} file: expected a JSON object with a {key!r} list.")
    return content[key]


def build_answer_vocabulary(
    annotations: str | os.PathLike | Iterable[dict] | Sequence[str | os.PathLike],
    *,
    min_count: int = DEFAULT_MIN_ANSWER_COUNT,
    normalize: Callable[[str], str] = normalize_vqa_answer,
) -> list[str]:
    """Answers that are the majority answer (`multiple_choice_answer`) of at least `min_count` questions.

    Args:
        annotations: a VQAv2 annotations file, several of them (train then val for the reference's 3129 classes), or
            annotation dicts.
        min_count: spec §3 uses 9.
        normalize: applied to every answer; the official VQA normalisation by default, as in the reference.

    Returns:
        The vocabulary in order of first occurrence, so the same files always give the same label ids.
    """
    if isinstance(annotations, (str, os.PathLike)):
        annotations = [annotations]
    counts: Counter = Counter()
    for item in annotations:
        records = _read_json_list(item, "annotations") if isinstance(item, (str, os.PathLike)) else [item]
        counts.update(normalize(record["multiple_choice_answer"]) for record in records)
    return [answer for answer, count in counts.items() if count >= min_count]


def _answer_targets(
    human_answers: list[str], label2id: dict[str, int], leave_one_out: bool
) -> tuple[list[int], list[float]]:
    counts = Counter(human_answers)
    pairs = sorted(
        (label2id[answer], vqa_soft_score(count, len(human_answers), leave_one_out=leave_one_out))
        for answer, count in counts.items()
        if answer in label2id
    )
    return [label for label, _ in pairs], [score for _, score in pairs]


def load_vqa(
    questions_file: str | os.PathLike,
    annotations_file: str | os.PathLike | None = None,
    *,
    image_root: str | os.PathLike | None = None,
    image_path_template: str = "COCO_{data_subtype}_{image_id:012d}.jpg",
    answer_vocabulary: Sequence[str] | None = None,
    min_answer_count: int = DEFAULT_MIN_ANSWER_COUNT,
    normalize: Callable[[str], str] = normalize_vqa_answer,
    leave_one_out: bool = True,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """Load VQAv2-format questions (and answers) as one row per question.

    Args:
        questions_file: `{"questions": [{"question_id", "image_id", "question"}], "data_subtype": ...}`.
        annotations_file: `{"annotations": [{"question_id", "image_id", "answer_type", "answers": [{"answer"}],
            "multiple_choice_answer"}]}`; None for test questions, whose answer columns are then empty.
        image_root: folder of the images; None leaves the `image` column out.
        image_path_template: file name of an image relative to `image_root`, formatted with `image_id` and the
            questions file's `data_subtype` (e.g. "train2014").
        answer_vocabulary: label ids to use (pass the training vocabulary when loading validation data); by default
            built from this annotations file with `build_answer_vocabulary(min_count=min_answer_count)`.
        normalize: answer normalisation, the official VQA one by default.
        leave_one_out: soft-score rule, see `vqa_soft_score`.
        streaming: return an `IterableDataset` that decodes images lazily.

    Returns:
        Columns `question`, `question_id`, `image_id`, `answers` (normalised human answers), `answer_type`,
        `multiple_choice_answer`, `answer_ids`, `answer_scores` and, with `image_root`, `image`. Answers outside the
        vocabulary get no label, as in the reference.
    """
    with open(questions_file) as file:
        question_content = json.load(file)
    if not isinstance(question_content, dict) or "questions" not in question_content:
        raise ValueError(f"{questions_file} is not a VQAv2 questions file: expected a JSON object with 'questions'.")
    questions = question_content["questions"]
    annotations = {}
    if annotations_file is not None:
        annotations = {record["question_id"]: record for record in _read_json_list(annotations_file, "annotations")}
        missing = [q["question_id"] for q in questions if q["question_id"] not in annotations]
        if missing:
            raise ValueError(
                f"{len(missing)} questions of {questions_file} have no annotation in {annotations_file} "
                f"(first question_id: {missing[0]}); are the two files of the same split?"
            )
    if answer_vocabulary is None:
        if not annotations:
            raise ValueError(
                "Pass `answer_vocabulary` (the training vocabulary) when loading questions without answers."
            )
        answer_vocabulary = build_answer_vocabulary(
            annotations.values(), min_count=min_answer_count, normalize=normalize
        )
    label2id = {answer: i for i, answer in enumerate(answer_vocabulary)}

    columns: dict[str, list] = {
        name: []
        for name in ("question", "question_id", "image_id", "answers", "answer_type", "multiple_choice_answer")
    }
    columns.update(answer_ids=[], answer_scores=[])
    if image_root is not None:
        columns["image"] = []
        subtype = question_content.get("data_subtype", "")
    for question in questions:
        record = annotations.get(question["question_id"], {})
        human_answers = [normalize(answer["answer"]) for answer in record.get("answers", [])]
        answer_ids, answer_scores = _answer_targets(human_answers, label2id, leave_one_out)
        columns["question"].append(question["question"])
        columns["question_id"].append(question["question_id"])
        columns["image_id"].append(question["image_id"])
        columns["answers"].append(human_answers)
        columns["answer_type"].append(record.get("answer_type"))
        columns["multiple_choice_answer"].append(
            normalize(record["multiple_choice_answer"]) if "multiple_choice_answer" in record else None
        )
        columns["answer_ids"].append(answer_ids)
        columns["answer_scores"].append(answer_scores)
        if image_root is not None:
            file_name = image_path_template.format(image_id=question["image_id"], data_subtype=subtype)
            columns["image"].append(os.path.join(image_root, file_name))

    features = Features(
        {
            "question": Value("string"),
            "question_id": Value("int64"),
            "image_id": Value("int64"),
            "answers": List(Value("string")),
            "answer_type": Value("string"),
            "multiple_choice_answer": Value("string"),
            **vqa_answer_features(answer_vocabulary),
        }
    )
    if image_root is not None:
        features["image"] = ImageFeature()
    dataset = Dataset.from_dict(columns, features=features)
    return dataset.to_iterable_dataset() if streaming else dataset
