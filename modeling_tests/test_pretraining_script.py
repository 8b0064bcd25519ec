"""examples/pretraining/run_pretraining.py: single-process, DDP and resumed runs of a tiny SCL on synthetic data."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tokenizer, tiny_config
from datasets import Dataset
from media import sample_image
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, RobertaConfig, RobertaModel

from transformers_scl.data import (
    ModalityGroupedBatchSampler,
    RankSlicedBatchSampler,
    make_synthetic_image_text,
    make_synthetic_video_text,
    split_off_held_out,
    write_synthetic_images,
    write_synthetic_videos,
)
from transformers_scl.processing_scl import SCLProcessor

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "pretraining" / "run_pretraining.py"
sys.path.insert(0, str(SCRIPT.parent))

import run_pretraining  # noqa: E402

OBJECTIVES = ("mlm", "itm", "itc", "mvsc", "mlsc")
TRAIN_SIZE = 24  # synthetic rows per modality
BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine makes more threads much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(str(path))
    return str(path)


def script_args(tokenizer_dir: str, output_dir, *extra: str) -> list[str]:
    """A tiny SCL from scratch on synthetic images + videos, logging every step, on CPU."""
    return [
        "--output_dir", str(output_dir),
        "--tokenizer_name", tokenizer_dir,
        "--config_overrides", json.dumps(tiny_config().to_dict()),
        "--image_dataset", "synthetic",
        "--video_dataset", "synthetic",
        "--synthetic_train_size", str(TRAIN_SIZE),
        "--synthetic_eval_size", "12",
        "--synthetic_image_size", "32",
        "--per_device_train_batch_size", str(BATCH),
        "--per_device_eval_batch_size", str(BATCH),
        "--learning_rate", "1e-3",
        "--logging_steps", "1",
        "--report_to", "none",
        "--disable_tqdm", "true",
        "--use_cpu",
        "--seed", "0",
        *extra,
    ]  # fmt: skip


def training_logs(log_history: list[dict]) -> dict[int, dict]:
    return {entry["step"]: entry for entry in log_history if "loss" in entry}


@pytest.fixture(scope="module")
def trained(tokenizer_dir, tmp_path_factory):
    """One single-process run: 2 optimizer steps of 2 accumulated micro-batches, then evaluation."""
    output_dir = tmp_path_factory.mktemp("single")
    args = [
        "--max_steps",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--do_train",
        "--do_eval",
        "--save_strategy",
        "no",
    ]
    trainer = run_pretraining.main(script_args(tokenizer_dir, output_dir, *args))
    return trainer, output_dir


@pytest.mark.slow
def test_every_objective_is_logged_separately_and_the_terms_sum_to_the_loss(trained):
    trainer, _ = trained
    logs = training_logs(trainer.state.log_history)
    assert sorted(logs) == [1, 2]
    for entry in logs.values():
        assert {f"loss_{name}" for name in OBJECTIVES} <= entry.keys()
        assert {"accuracy_mlm", "accuracy_itm", "accuracy_itc"} <= entry.keys()
        # Both are means over the same accumulated micro-batches, so the weighted terms add up to the loss.
        assert sum(entry[f"loss_{name}"] for name in OBJECTIVES) == pytest.approx(entry["loss"], rel=1e-5)


@pytest.mark.slow
def test_evaluation_reports_zero_shot_recall_both_ways_for_images_and_videos(trained):
    trainer, output_dir = trained
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    for modality in ("image", "video"):
        gallery = metrics[f"eval_{modality}_num_candidates"]
        assert 1 < gallery <= 12  # held-out synthetic examples with distinct captions
        for direction in ("i2t", "t2i"):
            r1, r5 = metrics[f"eval_{modality}_{direction}_r1"], metrics[f"eval_{modality}_{direction}_r5"]
            assert 0 <= r1 <= r5 <= 100
            assert (r1 * gallery / 100) == pytest.approx(round(r1 * gallery / 100))  # a whole number of hits
    assert metrics["eval_loss"] == pytest.approx(sum(metrics[f"eval_loss_{name}"] for name in OBJECTIVES))


@pytest.mark.slow
def test_optimizer_uses_scl_learning_rate_multipliers_and_no_decay_on_biases(trained):
    trainer, _ = trained
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert {"base", "base_no_decay", "head", "head_no_decay", "cross_modal", "cross_modal_no_decay"} == groups.keys()
    assert groups["base"]["initial_lr"] == pytest.approx(1e-3)
    assert groups["head"]["initial_lr"] == pytest.approx(5e-3)
    assert groups["cross_modal"]["initial_lr"] == pytest.approx(5e-3)
    assert all(group["betas"] == (0.9, 0.98) and group["eps"] == 1e-8 for group in groups.values())
    assert groups["base"]["weight_decay"] == 0.01 and groups["base_no_decay"]["weight_decay"] == 0.0
    bias = trainer.model.mlm_score.bias
    assert any(parameter is bias for parameter in groups["head_no_decay"]["params"])


@pytest.mark.slow
def test_training_batches_hold_one_modality_and_an_epoch_visits_both(trained):
    trainer, _ = trained
    kinds = []
    for batch in trainer.get_train_dataloader():
        present = [key for key in ("pixel_values", "pixel_values_videos") if key in batch]
        assert len(present) == 1
        assert batch[present[0]].shape[0] == BATCH
        kinds.append(present[0])
    assert len(kinds) == 2 * TRAIN_SIZE // BATCH
    assert kinds.count("pixel_values") == kinds.count("pixel_values_videos") == TRAIN_SIZE // BATCH


@pytest.mark.slow
def test_model_and_processor_are_saved_together(trained):
    _, output_dir = trained
    saved = set(os.listdir(output_dir))
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= saved


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [[], ["--dataloader_num_workers", "2", "--gradient_accumulation_steps", "2"]],
    ids=["in-process", "workers-accumulation"],
)
def test_resumed_run_continues_the_uninterrupted_loss_trajectory(tokenizer_dir, tmp_path, extra):
    # The data pipeline draws from per-example seeds, not the global RNG (SeededDataset), so this holds with
    # DataLoader workers too, and with the first resumed step's micro-batches drawn before Trainer restores its RNG.
    args = ["--max_steps", "6", "--save_steps", "3", "--do_train", *extra]
    straight = run_pretraining.main(script_args(tokenizer_dir, tmp_path / "straight", *args))
    # Interrupted after step 3: a fresh output folder holding only the step-3 checkpoint, resumed automatically.
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "straight" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    resumed = run_pretraining.main(script_args(tokenizer_dir, tmp_path / "resumed", *args))

    expected, actual = training_logs(straight.state.log_history), training_logs(resumed.state.log_history)
    assert sorted(actual) == sorted(expected) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # computed after resuming: augmentation, masks, dropout and data order must all match
        for key in ("loss", "grad_norm", *(f"loss_{name}" for name in OBJECTIVES)):
            assert actual[step][key] == pytest.approx(expected[step][key], rel=1e-6), (step, key)
    assert expected[4]["loss"] != pytest.approx(expected[5]["loss"], rel=1e-6)  # the steps really differ


@pytest.mark.slow
def test_torchrun_trains_on_two_ranks(tokenizer_dir, tmp_path):
    output_dir = tmp_path / "ddp"
    args = ["--max_steps", "2", "--do_train", "--do_eval", "--save_strategy", "no", "--ddp_backend", "gloo"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    result = subprocess.run(
        [*command, *script_args(tokenizer_dir, output_dir, *args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    logs = training_logs(state["log_history"])
    # One step consumes a global batch of 2 ranks x BATCH rows out of 2 x TRAIN_SIZE: a single process would have
    # advanced the epoch counter by half as much.
    assert logs[2]["epoch"] == pytest.approx(2 * (2 * BATCH) / (2 * TRAIN_SIZE))
    assert {f"loss_{name}" for name in OBJECTIVES} <= logs[2].keys()
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert {"eval_image_t2i_r1", "eval_video_i2t_r5"} <= metrics.keys()


def test_rank_slices_are_disjoint_equal_and_share_each_steps_modality():
    groups = ["image"] * 10 + ["video"] * 7
    grouped = ModalityGroupedBatchSampler(groups, batch_size=4, drop_last=True, seed=3)
    ranks = [list(RankSlicedBatchSampler(grouped, num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 10 // 4 + 7 // 4
    for batch_0, batch_1 in zip(*ranks):
        assert len(batch_0) == len(batch_1) == 2
        assert not set(batch_0) & set(batch_1)
        assert len({groups[index] for index in batch_0 + batch_1}) == 1


def test_held_out_split_keeps_all_captions_of_an_image_together():
    pairs = Dataset.from_dict(
        {"caption": [f"caption {i}" for i in range(40)], "image_id": [i // 4 for i in range(40)]}
    )
    train, held_out = split_off_held_out(pairs, "image_id", percentage=20, seed=0)
    assert len(set(held_out["image_id"])) == 2 and len(held_out) == 8
    assert not set(train["image_id"]) & set(held_out["image_id"])
    assert len(train) + len(held_out) == 40


def test_a_folder_without_an_eval_split_holds_out_whole_images(tokenizer_dir, tmp_path):
    write_synthetic_images(make_synthetic_image_text(20, seed=0, captions_per_image=2), tmp_path / "images")
    data_args = run_pretraining.DataArguments(image_dataset=str(tmp_path / "images"), validation_split_percentage=20)
    processor = SCLProcessor.from_config(AutoTokenizer.from_pretrained(tokenizer_dir), tiny_config())
    data = run_pretraining.build_datasets(data_args, processor, tiny_config(), seed=0)
    train_ids = set(data.train["image"].with_format(None)["image_id"])
    held_out_ids = data.eval["image"].with_format(None)["image_id"]
    assert len(set(held_out_ids)) == 4 and len(held_out_ids) == 8  # 20% of the images, with both captions each
    assert not train_ids & set(held_out_ids) and len(train_ids) == 16
    example = data.eval["image"][0]
    assert example["pixel_values"].shape == (3, 32, 32) and example["input_ids"][0] == processor.tokenizer.bos_token_id


def test_config_overrides_edit_single_fields_of_a_saved_config(tokenizer_dir, tmp_path):
    tiny_config().save_pretrained(tmp_path / "config")
    overrides = {"text_config": {"num_hidden_layers": 1}, "pretraining_objectives": ["mlm", "itc"]}
    model_args = run_pretraining.ModelArguments(
        config_name=str(tmp_path / "config"), config_overrides=json.dumps(overrides), tokenizer_name=tokenizer_dir
    )
    model, processor = run_pretraining.load_model_and_processor(model_args)
    assert model.config.text_config.num_hidden_layers == 1
    assert model.config.text_config.hidden_size == tiny_config().text_config.hidden_size  # the rest is kept
    assert model.config.pretraining_objectives == ["mlm", "itc"]
    assert processor.image_processor.size.height == model.config.image_size == 32


def test_model_initialises_from_clip_and_roberta_checkpoints(tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    roberta = RobertaModel(
        RobertaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    clip.save_pretrained(tmp_path / "clip")
    roberta.save_pretrained(tmp_path / "roberta")
    build_tokenizer(str(tmp_path / "roberta"))
    model_args = run_pretraining.ModelArguments(
        vision_model_name_or_path=str(tmp_path / "clip"),
        text_model_name_or_path=str(tmp_path / "roberta"),
        config_overrides=json.dumps({"hidden_size": 32, "num_attention_heads": 4, "num_fusion_layers": 1}),
        image_size=32,
    )
    model, processor = run_pretraining.load_model_and_processor(model_args)
    assert model.config.vision_config.num_hidden_layers == 2  # CLIP's last block is dropped (spec §1.2)
    clip_weights = {key.removeprefix("vision_model."): value for key, value in clip.state_dict().items()}
    torch.testing.assert_close(
        model.scl.vision_model.encoder.layers[1].mlp.fc1.weight, clip_weights["encoder.layers.1.mlp.fc1.weight"]
    )
    torch.testing.assert_close(
        model.scl.text_model.embeddings.word_embeddings.weight, roberta.embeddings.word_embeddings.weight
    )
    assert processor.tokenizer.name_or_path == str(tmp_path / "roberta")  # the text model's tokenizer


def test_help_documents_the_script_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_pretraining.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for argument in ("--image_dataset", "--video_dataset", "--lr_mult_head", "--config_overrides", "--push_to_hub"):
        assert argument in text


PHOTOS = {  # scikit-image's bundled photos (RGB, grayscale and RGBA files) with captions of our own
    "astronaut": "an astronaut in a white suit in front of a flag",
    "chelsea": "a ginger cat looking to the side",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket on a launch pad under a blue sky",
    "camera": "a man with a camera on a tripod",
    "coins": "old coins laid out in rows",
    "immunohistochemistry": "a stained tissue sample under a microscope",
    "logo": "a logo of colourful shapes on a white background",
}


def write_photo_folder(folder: Path) -> None:
    """An imagefolder (`metadata.jsonl` + files), two captions per photo, as a user's own data would be."""
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as metadata:
        for name, caption in PHOTOS.items():
            sample_image(name).resize((48, 48)).save(folder / f"{name}.png")
            record = {"file_name": f"{name}.png", "caption": [caption, f"a photo: {caption}"]}
            metadata.write(json.dumps(record) + "\n")


@pytest.mark.parametrize("modality", ["image", "video"])
def test_one_command_pretrains_from_scratch_on_a_folder_with_a_tokenizer_trained_on_its_captions(modality, tmp_path):
    folder = tmp_path / f"{modality}s"
    if modality == "image":
        write_photo_folder(folder)
    else:  # real video files (H.264 mp4) of synthetic moving shapes
        write_synthetic_videos(make_synthetic_video_text(8, seed=0, image_size=32), folder)
    config = tiny_config().to_dict()
    del config["text_config"]["vocab_size"]  # set from the trained tokenizer
    output_dir = tmp_path / "out"
    trainer = run_pretraining.main(
        [
            f"--{modality}_dataset", str(folder),
            "--train_tokenizer_vocab_size", "300",
            "--config_overrides", json.dumps(config),
            "--validation_split_percentage", "25",
            "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
            "--max_steps", "2", "--logging_steps", "1", "--do_train", "--do_eval",
            "--num_threads", "1", "--output_dir", str(output_dir),
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--use_cpu",
        ]
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(output_dir)  # saved with the model
    assert 261 < len(tokenizer) <= 300  # 256 bytes + 5 special tokens + merges learnt from the captions
    assert trainer.model.config.text_config.vocab_size == len(tokenizer)
    assert (output_dir / "tokenizer" / "vocab.json").is_file()
    caption = PHOTOS["rocket"] if modality == "image" else "a red circle moving up"
    assert len(tokenizer.tokenize(caption)) < len(caption) / 2  # merges learnt from the captions
    logs = training_logs(trainer.state.log_history)
    assert sorted(logs) == [1, 2] and all(math.isfinite(logs[step]["loss_itc"]) for step in logs)
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert metrics[f"eval_{modality}_num_candidates"] == 2  # 25% of the 8 photos / clips held out
    assert 0 <= metrics[f"eval_{modality}_t2i_r1"] <= 100
