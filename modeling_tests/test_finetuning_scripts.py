"""The fine-tuning scripts of `examples/finetuning` run end to end and learn.

A tiny SCL is fine-tuned from scratch on the built-in synthetic data (single-shape scenes at 32 px) and must beat
explicitly measured chance levels: VQA accuracy against the majority answer and a question-only baseline, retrieval
recall against a random ranking. NLVR2, video retrieval and the real-data loaders get smoke runs.

The tiny model uses 16 px patches (4 per image) and an initialiser range of 0.2 (about 1/sqrt(hidden)): with
transformers' 0.02 at hidden size 32 every input starts with nearly the same CLS features, and learning stalls for
hundreds of steps. Torch runs single-threaded here, which is several times faster than two threads on a busy machine.
"""

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import build_tokenizer, tiny_config
from transformers import AutoConfig, AutoModelForVisualQuestionAnswering, AutoProcessor, HfArgumentParser

from transformers_scl.data import make_synthetic_vqa
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.metrics import vqa_accuracy
from transformers_scl.modeling_scl import (
    SCLForImagesAndTextClassification,
    SCLForImageTextRetrieval,
    SCLForQuestionAnswering,
)
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.video_processing_scl import SCLVideoProcessor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "finetuning"
SEED = 0
IMAGE_SIZE = 32


def load_script(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the scripts import `finetuning_utils` from their folder
    spec = importlib.util.spec_from_file_location(f"finetuning_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Trainer pickles the script's TrainingArguments subclass by module name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved tokenizer + processor (32 px) and a tiny from-scratch config, as the scripts' `--processor_name` and
    `--config_name`."""
    root = tmp_path_factory.mktemp("finetuning")
    tokenizer = build_tokenizer(str(root / "tokenizer"))
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    SCLProcessor(SCLImageProcessor(size=size), SCLVideoProcessor(size=size), tokenizer).save_pretrained(
        root / "processor"
    )
    defaults = tiny_config()
    init = {"initializer_range": 0.2}
    tiny_config(
        text_config={**defaults.text_config.to_dict(), **init},
        vision_config={**defaults.vision_config.to_dict(), **init, "patch_size": 16},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **init,
    ).save_pretrained(root / "config")
    return root


def common_args(assets, output_dir, **overrides) -> list[str]:
    args = {
        "config_name": assets / "config",
        "processor_name": assets / "processor",
        "output_dir": output_dir,
        "image_size": IMAGE_SIZE,
        "lr_mult_head": 1,
        "lr_mult_cross_modal": 1,
        "save_strategy": "no",
        "disable_tqdm": "true",
        "dataloader_pin_memory": "false",
        "logging_steps": 100,
        "seed": SEED,
        **overrides,
    }
    return ["--do_train", "--do_eval"] + [item for key, value in args.items() for item in (f"--{key}", str(value))]


def question_only_accuracy(train, test) -> float:
    """VQA accuracy without looking at the image: the most frequent training answer of each question once its colour
    and shape words are masked (colours and shapes are drawn independently, so the masked words carry no answer)."""
    words = re.compile(r"\b(red|green|blue|yellow|purple|orange|circle|square|triangle)\b")
    best: dict[str, Counter] = {}
    for question, answer in zip(train["question"], train["multiple_choice_answer"]):
        best.setdefault(words.sub("X", question), Counter())[answer] += 1
    fallback = Counter(train["multiple_choice_answer"]).most_common(1)[0][0]
    predictions = [
        best[words.sub("X", q)].most_common(1)[0][0] if words.sub("X", q) in best else fallback
        for q in test["question"]
    ]
    return vqa_accuracy(predictions, test["answers"])["accuracy"]


# ---------------------------------------------------------------------------------------------------------------------
# Learning: above chance
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqa_run(assets):
    output_dir = assets / "vqa"
    sizes = {"synthetic_train_size": 1000, "synthetic_eval_size": 300, "synthetic_max_objects": 1}
    metrics = load_script("run_vqa").main(
        common_args(
            assets,
            output_dir,
            dataset="synthetic",
            learning_rate=1e-3,
            max_steps=800,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=100,
            **sizes,
        )
    )
    return metrics, output_dir


@pytest.mark.slow
def test_vqa_finetuning_beats_the_majority_answer_and_the_question_only_baseline(vqa_run):
    metrics, _ = vqa_run
    train = make_synthetic_vqa(1000, split="train", seed=SEED, image_size=IMAGE_SIZE, max_objects=1)
    test = make_synthetic_vqa(300, split="test", seed=SEED + 1, image_size=IMAGE_SIZE, max_objects=1)
    question_only = question_only_accuracy(train, test)
    print(
        f"VQA accuracy {metrics['eval_accuracy']:.1f} | majority answer "
        f"{metrics['eval_majority_answer_accuracy']:.1f} | question only {question_only:.1f}"
    )
    assert metrics["eval_accuracy"] > 2 * metrics["eval_majority_answer_accuracy"]
    # Beating the best image-blind answer means the model reads the image.
    assert metrics["eval_accuracy"] > question_only + 5


@pytest.mark.slow
def test_vqa_reports_accuracy_per_answer_type(vqa_run):
    metrics, _ = vqa_run
    assert {"eval_accuracy_yes_no", "eval_accuracy_number", "eval_accuracy_other", "eval_vqa_score"} <= set(metrics)
    # Each synthetic question has ten identical human answers, so the soft score of the argmax is the VQA accuracy.
    assert metrics["eval_vqa_score"] == pytest.approx(metrics["eval_accuracy"])


@pytest.mark.slow
def test_vqa_output_reloads_with_the_auto_classes(vqa_run):
    _, output_dir = vqa_run
    model = AutoModelForVisualQuestionAnswering.from_pretrained(output_dir)
    processor = AutoProcessor.from_pretrained(output_dir)
    assert isinstance(model, SCLForQuestionAnswering)
    assert isinstance(processor, SCLProcessor)
    assert processor.image_processor.size.height == IMAGE_SIZE
    example = make_synthetic_vqa(1, split="test", seed=SEED + 1, image_size=IMAGE_SIZE, max_objects=1)[0]
    inputs = processor(images=example["image"], text=example["question"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, model.config.num_labels)
    assert model.config.id2label[int(logits.argmax())] in model.config.label2id


@pytest.fixture(scope="module")
def retrieval_run(assets):
    output_dir = assets / "retrieval"
    metrics = load_script("run_retrieval").main(
        common_args(
            assets,
            output_dir,
            dataset="synthetic",
            synthetic_max_objects=1,
            synthetic_train_size=1000,
            synthetic_eval_size=100,
            learning_rate=5e-4,
            max_steps=400,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=128,
            num_negatives=3,
            retrieval_k=16,
        )
    )
    return metrics, output_dir


@pytest.mark.slow
def test_retrieval_finetuning_beats_chance_recall(retrieval_run):
    metrics, _ = retrieval_run
    num_images = metrics["eval_num_images"]  # one caption per held-out scene
    assert metrics["eval_chance_img_r1"] == pytest.approx(100 / num_images)
    chance = {k: 100 * k / num_images for k in (1, 5, 10)}
    print(
        "retrieval R@1/5/10 image->text "
        + "/".join(f"{metrics[f'eval_txt_r{k}']:.1f}" for k in (1, 5, 10))
        + ", text->image "
        + "/".join(f"{metrics[f'eval_img_r{k}']:.1f}" for k in (1, 5, 10))
        + " | chance "
        + "/".join(f"{value:.1f}" for value in chance.values())
    )
    for k in (1, 5, 10):  # mean of image->text and text->image
        assert (metrics[f"eval_txt_r{k}"] + metrics[f"eval_img_r{k}"]) / 2 > 3 * chance[k], k


@pytest.mark.slow
def test_retrieval_output_reloads_with_its_config(retrieval_run):
    _, output_dir = retrieval_run
    config = AutoConfig.from_pretrained(output_dir)
    model = SCLForImageTextRetrieval.from_pretrained(output_dir)
    assert config.num_retrieval_negatives == 3
    assert not any(p.requires_grad for p in model.itm_score.parameters())  # spec §3.1: the ITM head stays frozen


# ---------------------------------------------------------------------------------------------------------------------
# Smoke runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nlvr2_smoke_run_reports_accuracy_and_saves_a_three_token_type_model(assets):
    output_dir = assets / "nlvr2"
    metrics = load_script("run_nlvr2").main(
        common_args(
            assets,
            output_dir,
            dataset="synthetic",
            synthetic_max_objects=1,
            synthetic_train_size=64,
            synthetic_eval_size=32,
            learning_rate=5e-4,
            max_steps=4,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
        )
    )
    assert 0 <= metrics["eval_accuracy"] <= 100
    model = SCLForImagesAndTextClassification.from_pretrained(output_dir)
    assert model.scl.token_type_embeddings.weight.shape[0] == 3  # spec §3.1: left image 1, right image 2


@pytest.mark.slow
def test_video_retrieval_smoke_run_reports_recall(assets):
    metrics = load_script("run_retrieval").main(
        common_args(
            assets,
            assets / "video_retrieval",
            dataset="synthetic",
            modality="video",
            num_frames=4,
            synthetic_train_size=32,
            synthetic_eval_size=16,
            learning_rate=5e-4,
            max_steps=2,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            num_negatives=3,
            retrieval_k=8,
            itc_weight=1.0,
            logging_steps=1,
        )
    )
    assert {"eval_txt_r1", "eval_img_r10", "eval_itc_r_mean"} <= set(metrics)
    assert AutoConfig.from_pretrained(assets / "video_retrieval").num_frames == 4
    # Both loss terms are logged next to the total (issue 13): rank loss + itc_weight (1.0) x ITC loss.
    state = json.loads((assets / "video_retrieval" / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logs] == [1, 2]
    for entry in logs:
        assert entry["loss_rank"] > 0 and entry["loss_itc"] > 0
        assert entry["loss_rank"] + entry["loss_itc"] == pytest.approx(entry["loss"], rel=1e-3)


@pytest.mark.parametrize("script_name", ["run_vqa", "run_nlvr2", "run_retrieval"])
def test_num_threads_sets_the_torch_thread_count(script_name, tmp_path):
    script = load_script(script_name)
    arguments_class = next(
        value
        for name, value in vars(script).items()
        if name.endswith("TrainingArguments") and name != "SCLTrainingArguments"
    )
    parser = HfArgumentParser((script.ModelArguments, script.DataArguments, arguments_class))
    threads = torch.get_num_threads()
    try:
        arguments = ["--model_name_or_path", "x", "--output_dir", str(tmp_path), "--dataset", "synthetic"]
        *_, training_args = parser.parse_args_into_dataclasses([*arguments, "--num_threads", "2"])
        assert training_args.num_threads == 2 and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="--num_threads must be at least 1"):
            parser.parse_args_into_dataclasses([*arguments, "--num_threads", "0"])
    finally:
        torch.set_num_threads(threads)


def write_vqav2_files(folder: Path, num_questions: int, subtype: str) -> tuple[Path, Path]:
    """A VQAv2-format question file, annotation file and image folder, from synthetic questions."""
    data = make_synthetic_vqa(num_questions, split="test", seed=SEED + 2, image_size=IMAGE_SIZE, max_objects=1)
    (folder / subtype).mkdir(parents=True)
    questions, annotations = [], []
    for row in data:
        row["image"].save(folder / subtype / f"{row['image_id']}.png")
        questions.append({"question_id": row["question_id"], "image_id": row["image_id"], "question": row["question"]})
        annotations.append(
            {
                "question_id": row["question_id"],
                "image_id": row["image_id"],
                "answer_type": row["answer_type"],
                "multiple_choice_answer": row["multiple_choice_answer"],
                "answers": [{"answer": answer, "answer_id": i + 1} for i, answer in enumerate(row["answers"])],
            }
        )
    question_file, annotation_file = folder / f"{subtype}_questions.json", folder / f"{subtype}_annotations.json"
    question_file.write_text(json.dumps({"questions": questions, "data_subtype": subtype}))
    annotation_file.write_text(json.dumps({"annotations": annotations}))
    return question_file, annotation_file


@pytest.mark.slow
def test_vqa_trains_on_vqav2_json_files_with_a_validation_holdout(assets, tmp_path):
    train_questions, train_annotations = write_vqav2_files(tmp_path, 24, "train2014")
    val_questions, val_annotations = write_vqav2_files(tmp_path, 12, "val2014")
    script = load_script("run_vqa")
    files = dict(
        train_questions_file=train_questions,
        train_annotations_file=train_annotations,
        train_image_dir=tmp_path / "train2014",
        validation_questions_file=val_questions,
        validation_annotations_file=val_annotations,
        validation_image_dir=tmp_path / "val2014",
        image_path_template="{image_id}.png",
        min_answer_count=1,
    )
    metrics = script.main(
        common_args(
            assets,
            tmp_path / "out",
            dataset="vqav2",
            validation_holdout=4,
            max_steps=2,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            **files,
        )
    )
    # ViLT/SCL protocol: train on train + val[:-4], evaluate on val[-4:].
    assert (metrics["train_samples"], metrics["eval_samples"]) == (24 + 8, 4)
    assert 0 <= metrics["eval_accuracy"] <= 100
    # The answer vocabulary is every majority answer of the train and val annotations (min_answer_count 1).
    majority = {
        a["multiple_choice_answer"]
        for f in (train_annotations, val_annotations)
        for a in json.loads(f.read_text())["annotations"]
    }
    model = SCLForQuestionAnswering.from_pretrained(tmp_path / "out")
    assert set(model.config.label2id) == majority


# ---------------------------------------------------------------------------------------------------------------------
# Script pieces
# ---------------------------------------------------------------------------------------------------------------------


def test_nlvr2_reads_the_official_identifier_format(tmp_path):
    script = load_script("run_nlvr2")
    lines = [
        {"identifier": "train-10171-0-0", "sentence": "two dogs", "label": "True", "directory": 42},
        {"left_image": "a.png", "right_image": "/abs/b.png", "sentence": "one cat", "label": False},
    ]
    path = tmp_path / "train.json"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    dataset = script.load_jsonl(str(path), "/images").cast_column("left_image", script.ImageFeature(decode=False))
    dataset = dataset.cast_column("right_image", script.ImageFeature(decode=False))
    assert [row["path"] for row in dataset["left_image"]] == ["/images/42/train-10171-0-img0.png", "/images/a.png"]
    assert [row["path"] for row in dataset["right_image"]] == ["/images/42/train-10171-0-img1.png", "/abs/b.png"]
    assert dataset["label"] == [1, 0]


def test_nlvr2_rejects_an_unreadable_label_naming_the_line(tmp_path):
    script = load_script("run_nlvr2")
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"left_image": "a", "right_image": "b", "sentence": "s", "label": "maybe"}))
    with pytest.raises(ValueError, match=r"dev.json:1: label must be"):
        script.load_jsonl(str(path), None)


def test_synthetic_nlvr2_statements_describe_one_image_exactly_when_true():
    script = load_script("run_nlvr2")
    pairs = script.make_synthetic_nlvr2(40, "train", SEED, IMAGE_SIZE, max_objects=1)
    assert 10 < sum(pairs["label"]) < 30
    assert len(pairs) == 40


def test_set_image_size_resizes_the_position_table_once(assets):
    utils = load_script("finetuning_utils")
    model = SCLForQuestionAnswering(AutoConfig.from_pretrained(assets / "config", num_labels=3))
    cls_row = model.scl.vision_model.embeddings.position_embedding.weight[0].clone()
    utils.set_image_size(model, 48)  # 2x2 -> 3x3 patches of 16 px (spec §3.2: e.g. 288 -> 384)
    assert model.scl.vision_model.embeddings.position_embedding.weight.shape[0] == 1 + 9
    assert model.config.vision_config.image_size == model.config.image_size == 48
    torch.testing.assert_close(model.scl.vision_model.embeddings.position_embedding.weight[0], cls_row)
    logits = model(input_ids=torch.tensor([[0, 5, 2]]), pixel_values=torch.randn(1, 3, 48, 48)).logits
    assert logits.shape == (1, 3)


@pytest.mark.parametrize(
    ("script_name", "arguments_class", "expected"),
    [
        (
            "run_vqa",
            "VQATrainingArguments",
            {"learning_rate": 5e-6, "lr_mult_head": 50, "lr_mult_cross_modal": 10, "image_size": 384},
        ),
        (
            "run_nlvr2",
            "NLVR2TrainingArguments",
            {"learning_rate": 1e-5, "lr_mult_head": 10, "lr_mult_cross_modal": 10, "image_size": 288},
        ),
        (
            "run_retrieval",
            "RetrievalTrainingArguments",
            {
                "learning_rate": 5e-6,
                "lr_mult_head": 10,
                "lr_mult_cross_modal": 10,
                "image_size": 384,
                "num_negatives": 15,
            },
        ),
    ],
)
def test_defaults_are_the_reference_hyperparameters(script_name, arguments_class, expected, tmp_path):
    script = load_script(script_name)
    parser = HfArgumentParser((script.ModelArguments, script.DataArguments, getattr(script, arguments_class)))
    _, data_args, training_args = parser.parse_args_into_dataclasses(
        ["--model_name_or_path", "x", "--output_dir", str(tmp_path), "--dataset", "synthetic"]
    )
    values = {**vars(data_args), **vars(training_args)}
    # spec §3.2, common to all tasks: 10 epochs, 10% warmup, AdamW(0.9, 0.98), weight decay 0.01, linear decay.
    assert values["num_train_epochs"] == 10
    assert values["warmup_steps"] == 0.1
    assert (values["adam_beta1"], values["adam_beta2"], values["weight_decay"]) == (0.9, 0.98, 0.01)
    assert values["lr_scheduler_type"] == "linear"
    for name, value in expected.items():
        assert values[name] == value, name
