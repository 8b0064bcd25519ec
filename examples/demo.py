#!/usr/bin/env python
"""SCL end to end in a few minutes on a laptop CPU: build, pre-train, evaluate, save, reload, retrieve.

It runs on `--num_threads` torch threads (default 1) and prints the library versions and thread count first: the
figures depend on them and on the CPU. `--seed` changes the model initialisation, data order, augmentation and masks.

    python examples/demo.py                      # writes ./scl-demo
    python examples/demo.py --ablation           # full SCL vs. SCL without MVSC and MLSC (see examples/ablation.py)

1. Trains a byte-level BPE tokenizer on the captions of the built-in synthetic data and saves it as a
   `RobertaTokenizer`; builds a tiny SCL configuration and an `SCLProcessor`.
2. Pre-trains the model from scratch with all five objectives (MLM, ITM, ITC, MVSC, MLSC) on synthetic images *and*
   videos at once, through `examples/pretraining/run_pretraining.py` (Trainer, single-modality batches), printing the
   loss of every objective as it goes.
3. Reports zero-shot ITC retrieval recall on held-out images and videos before and after training, against chance.
4. Saves model and processor, reloads them in a fresh Python process with `AutoModelForPreTraining` and
   `AutoProcessor` (`trust_remote_code=True`, without importing `transformers_scl`), and retrieves the image of a
   held-out caption.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
LOSS_NAMES = ("mlm", "itm", "itc", "mvsc", "mlsc")

# The demo's model and schedule, tuned to learn clearly in ~3 minutes on 2 CPU cores.
MAX_STEPS = 1000
LEARNING_RATE = 2e-3  # with x1 head/fusion multipliers: the paper's x5 (spec §3.2) made this tiny model unstable
IMAGE_SIZE = 32  # synthetic scenes are drawn at 64 px and resized, as real data would be
TRAIN_SIZE = 2000  # synthetic training examples per modality
EVAL_SIZE = 200  # held-out examples per modality, before dropping repeated captions
# Wider than the 0.02 of the full-size model: in a 64-wide tower N(0, 0.02) weights leave the CLS tokens almost
# independent of the input, and ITC then settles at chance (uniform logits) instead of learning.
INIT_RANGE = 0.1
# No dropout: a 0.34M-parameter model that sees each of its 4,000 training examples eight times underfits rather than
# overfits, and with dropout 0.1 its held-out image recall after 1,000 steps was about half as high.
DROPOUT = 0.0


def tiny_config(vocab_size: int) -> dict:
    """A ~0.34M-parameter SCL: 32 px inputs in 8 px patches, 4-frame videos, 2-layer towers, 1+1 fusion layers."""
    return {
        "text_config": {
            "model_type": "roberta",
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
            "hidden_dropout_prob": DROPOUT,
            "attention_probs_dropout_prob": DROPOUT,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "initializer_range": INIT_RANGE,
        },
        "vision_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "max_frames": 8,
            "initializer_range": INIT_RANGE,
        },
        "hidden_size": 64,
        "num_fusion_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "image_size": IMAGE_SIZE,
        "num_frames": 4,
        "itc_projection_dim": 64,
        "hidden_dropout_prob": DROPOUT,
        "attention_probs_dropout_prob": DROPOUT,
        "initializer_range": INIT_RANGE,
    }


def environment_report(num_threads: int) -> dict:
    """The versions and thread count a run used: the figures depend on them (and on the CPU)."""
    import platform

    import accelerate
    import datasets
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
        "torch_threads": num_threads,
        "cpu": platform.processor() or platform.machine(),
    }


def training_args(output_dir: str, seed: int, max_steps: int, objectives=None) -> list[str]:
    """Command-line arguments of run_pretraining.py for the demo run."""
    overrides = tiny_config(vocab_size=0)  # the real vocab size is filled in by `pretrain`
    if objectives is not None:
        overrides["pretraining_objectives"] = list(objectives)
    return [
        "--output_dir", output_dir,
        "--image_dataset", "synthetic",
        "--video_dataset", "synthetic",
        "--synthetic_train_size", str(TRAIN_SIZE),
        "--synthetic_eval_size", str(EVAL_SIZE),
        "--config_overrides", json.dumps(overrides),
        "--do_train", "--do_eval",
        "--eval_on_start", "true",
        "--max_steps", str(max_steps),
        "--per_device_train_batch_size", "32",
        "--per_device_eval_batch_size", "50",
        "--learning_rate", str(LEARNING_RATE),
        "--lr_mult_head", "1",
        "--lr_mult_cross_modal", "1",
        "--warmup_steps", "0.1",
        "--logging_steps", "50",
        "--save_strategy", "no",
        "--report_to", "none",
        "--disable_tqdm", "true",
        "--use_cpu",
        "--seed", str(seed),
    ]  # fmt: skip


def build_tokenizer(save_dir: str, seed: int = 0):
    """Train a byte-level BPE on synthetic captions and save it as a `RobertaTokenizer` (RoBERTa's special tokens)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    from transformers_scl.data import make_synthetic_image_text, make_synthetic_video_text

    captions = list(make_synthetic_video_text(500, seed=seed)["caption"])
    for caption in make_synthetic_image_text(500, seed=seed, captions_per_image=3)["caption"]:
        captions.extend(caption)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        captions,
        vocab_size=512,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    os.makedirs(save_dir, exist_ok=True)
    bpe.save_model(save_dir)
    tokenizer = RobertaTokenizer.from_pretrained(save_dir, model_max_length=50)
    tokenizer.save_pretrained(save_dir)
    return tokenizer


def make_loss_table_callback():
    """A callback printing one row per training log: step and each objective's loss."""
    from transformers import TrainerCallback

    class LossTable(TrainerCallback):
        def __init__(self):
            self.rows = []
            self.evaluations = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            if not self.rows:
                print(f"{'step':>6} {'total':>8} " + " ".join(f"{name:>7}" for name in LOSS_NAMES), flush=True)
            row = [state.global_step, logs["loss"], *(logs.get(f"loss_{name}") for name in LOSS_NAMES)]
            self.rows.append(row)
            cells = [f"{value:>7.3f}" if value is not None else f"{'-':>7}" for value in row[2:]]
            print(f"{row[0]:>6} {row[1]:>8.3f} " + " ".join(cells), flush=True)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.evaluations.append(dict(metrics or {}))

    return LossTable()


def pretrain(output_dir: str, seed: int, max_steps: int, objectives=None, quiet: bool = True, extra_args=()):
    """Tokenizer + tiny SCL + pre-training through run_pretraining.main; returns (trainer, loss table).

    `extra_args` are appended to run_pretraining's arguments (later values win), e.g. `["--learning_rate", "1e-3"]`.
    """
    sys.path.insert(0, str(EXAMPLES_DIR / "pretraining"))
    import datasets
    import run_pretraining
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging

    tokenizer_dir = os.path.join(output_dir, "tokenizer")
    tokenizer = build_tokenizer(tokenizer_dir)
    args = training_args(output_dir, seed, max_steps, objectives)
    overrides = json.loads(args[args.index("--config_overrides") + 1])
    overrides["text_config"]["vocab_size"] = len(tokenizer)
    args[args.index("--config_overrides") + 1] = json.dumps(overrides)
    args += ["--tokenizer_name", tokenizer_dir, *extra_args]
    if quiet:
        args += ["--log_level", "warning"]
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    table = make_loss_table_callback()
    job = run_pretraining.prepare(args, callbacks=[table])
    if quiet:  # the loss table replaces Trainer's printing of every log dict
        job.trainer.remove_callback(PrinterCallback)
    job.run(print_metrics=not quiet)
    return job.trainer, table


def recall_summary(metrics: dict) -> dict:
    """{modality: {"i2t_r1": ..., "t2i_r1": ..., "i2t_r5": ..., "t2i_r5": ..., "n": gallery size}}."""
    summary = {}
    for modality in ("image", "video"):
        prefix = f"eval_{modality}_"
        if f"{prefix}i2t_r1" in metrics:
            summary[modality] = {key: metrics[f"{prefix}{key}"] for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")}
            summary[modality]["n"] = int(metrics[f"{prefix}num_candidates"])
    return summary


def print_recall_table(before: dict, after: dict) -> None:
    print(f"\n{'zero-shot ITC retrieval (%)':<30} {'before':>8} {'after':>8} {'chance':>8}")
    for modality, values in after.items():
        n = values["n"]
        for key, label in (("i2t", f"{modality} -> text"), ("t2i", f"text -> {modality}")):
            for k in (1, 5):
                name = f"{key}_r{k}"
                chance = 100 * min(k, n) / n
                print(
                    f"{label + f' R@{k} (n={n})':<30} {before[modality][name]:>8.1f} {values[name]:>8.1f} {chance:>8.1f}"
                )


RELOAD_SCRIPT = r"""
import json, os, sys
import torch
from PIL import Image
from transformers import AutoModelForPreTraining, AutoProcessor

model_dir, gallery_dir = sys.argv[1], sys.argv[2]
model = AutoModelForPreTraining.from_pretrained(model_dir, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
assert "transformers_scl" not in sys.modules, "the reload must go through the remote code saved with the model"
with open(os.path.join(gallery_dir, "metadata.jsonl")) as file:
    records = [json.loads(line) for line in file]
images = [Image.open(os.path.join(gallery_dir, record["file_name"])).convert("RGB") for record in records]
query = int(sys.argv[3]) % len(records)
with torch.no_grad():
    text = processor(text=[records[query]["caption"]], return_tensors="pt")
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    text_features = model.get_text_features(text["input_ids"], text["attention_mask"]).pooler_output
    image_features = model.get_image_features(pixels).pooler_output
    scores = (text_features @ image_features.T)[0]
best = int(scores.argmax())
print(json.dumps({
    "model_class": type(model).__name__,
    "model_module": type(model).__module__,
    "processor_class": type(processor).__name__,
    "query": records[query]["caption"],
    "top_image": records[best]["file_name"],
    "top_image_caption": records[best]["caption"],
    "correct": best == query,
    "rank_of_correct_image": int((scores > scores[query]).sum()),
    "gallery_size": len(records),
}))
"""


def reload_and_retrieve(model_dir: str, gallery_dir: str, query: int) -> dict:
    """Reload the saved model and processor in a fresh process (remote code only) and retrieve one image."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, model_dir, gallery_dir, str(query)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=model_dir,  # away from the repository, so `transformers_scl` can only come from the saved files
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Reloading {model_dir} in a fresh process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_gallery(output_dir: str, size: int = 50) -> str:
    """Held-out synthetic scenes (distinct captions) written as PNG files + metadata.jsonl, for the reload check."""
    from transformers_scl.data import make_synthetic_image_text, write_synthetic_images

    scenes = make_synthetic_image_text(4 * size, split="test", seed=1)
    seen, keep = set(), []
    for index, caption in enumerate(scenes["caption"]):
        if caption not in seen and len(keep) < size:
            seen.add(caption)
            keep.append(index)
    gallery_dir = os.path.join(output_dir, "held_out_gallery")
    write_synthetic_images(scenes.select(keep), gallery_dir)
    return gallery_dir


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="./scl-demo")
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num_threads",
        type=int,
        default=1,
        help="Torch CPU threads. The demo's 64-wide matrices gain little from more, and on a busy machine extra "
        "threads slow every step down several times.",
    )
    parser.add_argument("--ablation", action="store_true", help="Run examples/ablation.py instead.")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.num_threads)  # pinned: the default (one per core) is slower and machine-dependent
    environment = environment_report(torch.get_num_threads())
    print("Environment: " + ", ".join(f"{name} {value}" for name, value in environment.items()), flush=True)
    if args.ablation:
        sys.path.insert(0, str(EXAMPLES_DIR))
        import ablation

        return ablation.main(
            [
                "--output_dir",
                args.output_dir,
                "--max_steps",
                str(args.max_steps),
                "--num_threads",
                str(args.num_threads),
            ]
        )

    start = time.time()
    output_dir = os.path.abspath(args.output_dir)
    print(f"Pre-training a tiny SCL on synthetic images and videos for {args.max_steps} steps -> {output_dir}\n")
    trainer, table = pretrain(output_dir, args.seed, args.max_steps)
    before, after = recall_summary(table.evaluations[0]), recall_summary(table.evaluations[-1])
    print_recall_table(before, after)
    train_seconds = time.time() - start

    print(f"\nSaved model + processor to {output_dir}; reloading them in a fresh process with trust_remote_code=True")
    gallery = write_gallery(output_dir)
    retrieval = reload_and_retrieve(output_dir, gallery, query=args.seed)
    print(
        f"  loaded {retrieval['model_class']} from {retrieval['model_module']} and {retrieval['processor_class']}\n"
        f'  query: "{retrieval["query"]}"\n'
        f"  top image of {retrieval['gallery_size']}: {retrieval['top_image']} "
        f'("{retrieval["top_image_caption"]}") -> {"correct" if retrieval["correct"] else "wrong"}'
        f" (the correct image ranks {retrieval['rank_of_correct_image'] + 1})"
    )
    total = time.time() - start
    print(f"\nDone in {total / 60:.1f} min ({train_seconds / 60:.1f} min building and training).")
    summary = {
        "seed": args.seed,
        "environment": environment,
        "before": before,
        "after": after,
        "retrieval": retrieval,
        "seconds": total,
        "losses": table.rows,
    }
    with open(os.path.join(output_dir, "demo_results.json"), "w") as file:
        json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    main()
