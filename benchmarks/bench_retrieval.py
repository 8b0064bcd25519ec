"""Two-stage retrieval (ITC top-k + rank-head re-ranking) against full cross-encoder ranking.

On the built-in synthetic shapes data (`transformers_scl.data.synthetic`) this script

1. trains a tiny `SCLForImageTextRetrieval` from scratch for a short while (rank loss + ITC, spec §3.1), so that
   both stages have something to rank with;
2. builds a test gallery of N images x 5N captions (three paraphrases from the generator, topped up to five with
   templated variants of them) and runs `transformers_scl.retrieval.evaluate_retrieval`
   * with full ranking (every one of the 5N² pairs through the fusion model: the reference's protocol), and
   * two-stage, for each k of `--ks`;
3. prints time (encoding + ITC + re-ranking) and recall@1/5/10 in both directions for each, the speed-up over full
   ranking and the R@1 gap, and optionally writes everything to `--output` as JSON.

The issue's target: at N = 1000, two-stage retrieval at least 20x faster than full ranking, with R@1 within 0.5
points. Example (about 10-20 minutes on 2 CPU cores, most of it full ranking):

    python benchmarks/bench_retrieval.py --num-images 1000 --output bench_retrieval.json

`--num-images 500 --train-seconds 60` is a quicker check.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaTokenizer

from transformers_scl import SCLConfig
from transformers_scl.data.synthetic import make_synthetic_image_text
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.modeling_scl import SCLForImageTextRetrieval
from transformers_scl.retrieval import evaluate_retrieval

CAPTIONS_PER_IMAGE = 5
TEMPLATES = ("an image of {}", "a picture showing {}", "a drawing of {}")
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=1000, help="test gallery size N (5N captions)")
    parser.add_argument("--num-train-images", type=int, default=4000)
    parser.add_argument("--train-seconds", type=float, default=180.0, help="training time budget")
    parser.add_argument("--max-train-steps", type=int, default=2000)
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64, 128])
    parser.add_argument("--pair-batch-size", type=int, default=4096, help="fused pairs per forward")
    parser.add_argument("--image-size", type=int, default=24, help="model input size (3x3 patches of 8 px)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). The tiny model's matrices parallelise poorly, and on a busy "
        "machine several OpenMP threads per process slow it down many times over",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-full-ranking", action="store_true", help="only the two-stage runs")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser.parse_args()


def five_captions(captions: list[str]) -> list[str]:
    """The generator's paraphrases, topped up to five with templated variants of them."""
    captions = list(captions)
    variants = [template.format(caption) for template in TEMPLATES for caption in captions]
    return (captions + variants)[:CAPTIONS_PER_IMAGE]


def load_split(num_images: int, split: str, seed: int, image_processor) -> tuple[torch.Tensor, list[list[str]]]:
    dataset = make_synthetic_image_text(num_images, split=split, seed=seed, image_size=48, captions_per_image=3)
    pixel_values = image_processor(images=list(dataset["image"]), return_tensors="pt")["pixel_values"]
    captions = [five_captions(caption if isinstance(caption, list) else [caption]) for caption in dataset["caption"]]
    return pixel_values, captions


def build_tokenizer(corpus: list[str], save_dir: str) -> RobertaTokenizer:
    """A real byte-level BPE with RoBERTa's special tokens, trained on the captions."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=512, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(save_dir)
    return RobertaTokenizer.from_pretrained(save_dir, model_max_length=64)


def tiny_config(vocab_size: int, image_size: int) -> SCLConfig:
    # Trained from scratch, a 32-wide model needs a wider init than BERT's 0.02: with it, every unimodal CLS token is
    # nearly input-independent and the contrastive loss sits at chance for hundreds of steps.
    init_std = 0.2
    return SCLConfig(
        text_config=dict(
            model_type="roberta",
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=66,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            initializer_range=init_std,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=8,
            max_frames=1,
            initializer_range=init_std,
        ),
        hidden_size=32,
        num_fusion_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=init_std,
        image_size=image_size,
        num_frames=1,
        itc_projection_dim=32,
        itc_weight=1.0,
        num_retrieval_negatives=7,
    )


def train(model, tokenizer, pixel_values, captions, args) -> dict:
    """Rank loss + ITC on random (image, random one of its captions) batches, until the step or time budget ends."""
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    # The temperature is a divisor without a clamp (spec §1.1); at this learning rate it would soon cross zero.
    model.itc_temperature.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    model.train()
    started, step, losses = time.perf_counter(), 0, []
    while step < args.max_train_steps and time.perf_counter() - started < args.train_seconds:
        rows = rng.choice(len(captions), args.train_batch_size, replace=False)
        texts = [captions[row][rng.integers(CAPTIONS_PER_IMAGE)] for row in rows]
        tokens = tokenizer(texts, padding=True, return_tensors="pt").to(args.device)
        output = model(
            **tokens, pixel_values=pixel_values[rows].to(args.device), return_loss=True, generator=generator
        )
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
        step += 1
        if step % 50 == 0:
            print(f"  step {step:5d}  loss {np.mean(losses[-50:]):.3f}  ({time.perf_counter() - started:.0f} s)")
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - started, "final_loss": float(np.mean(losses[-50:]))}


def summarize(name: str, result) -> dict:
    metrics = result.metrics
    row = {
        "name": name,
        "pairs": result.num_pairs,
        "seconds": result.timings["total"],
        "rerank_seconds": result.timings["rerank"],
        **{key: metrics[key] for key in ("txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10")},
    }
    print(
        f"{name:>14} {row['pairs']:>9,d} pairs {row['seconds']:8.1f} s | "
        f"i2t R@1/5/10 {row['txt_r1']:5.1f} {row['txt_r5']:5.1f} {row['txt_r10']:5.1f} | "
        f"t2i R@1/5/10 {row['img_r1']:5.1f} {row['img_r5']:5.1f} {row['img_r10']:5.1f}",
        flush=True,
    )
    return row


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    image_processor = SCLImageProcessor(size={"height": args.image_size, "width": args.image_size})

    print(
        f"Data: {args.num_train_images} training images, {args.num_images} test images x {CAPTIONS_PER_IMAGE} captions"
    )
    train_pixels, train_captions = load_split(args.num_train_images, "train", args.seed, image_processor)
    test_pixels, test_captions = load_split(args.num_images, "test", args.seed + 1, image_processor)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer = build_tokenizer([caption for group in train_captions for caption in group], tokenizer_dir)

    model = SCLForImageTextRetrieval(tiny_config(len(tokenizer), args.image_size)).to(args.device)
    print(f"Training a {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter model on {args.device}")
    training = train(model, tokenizer, train_pixels, train_captions, args)

    texts = [caption for group in test_captions for caption in group]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    txt2img = torch.arange(args.num_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    common = dict(txt2img=txt2img, pair_batch_size=args.pair_batch_size, image_batch_size=512, progress=False)

    def run(**kwargs):
        return evaluate_retrieval(
            model, tokens["input_ids"], tokens["attention_mask"], test_pixels, **common, **kwargs
        )

    print(
        f"\nRetrieval over {args.num_images} images x {len(texts)} captions ({args.num_images * len(texts):,} pairs)"
    )
    rows = []
    first = run(k=args.ks[0])
    itc = {key: first.itc_metrics[key] for key in ("txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10")}
    print(
        f"{'ITC only':>14} {'':>15} {first.timings['encode'] + first.timings['itc']:8.1f} s | "
        f"i2t R@1/5/10 {itc['txt_r1']:5.1f} {itc['txt_r5']:5.1f} {itc['txt_r10']:5.1f} | "
        f"t2i R@1/5/10 {itc['img_r1']:5.1f} {itc['img_r5']:5.1f} {itc['img_r10']:5.1f}"
    )
    rows.append(summarize(f"two-stage k={args.ks[0]}", first))
    for k in args.ks[1:]:
        rows.append(summarize(f"two-stage k={k}", run(k=k)))
    full = None
    if not args.skip_full_ranking:
        full = summarize("full ranking", run(full_ranking=True))
        print("\nAgainst full ranking:")
        for row in rows:
            row["speedup"] = full["seconds"] / row["seconds"]
            row["r1_gap"] = {key: row[key] - full[key] for key in ("txt_r1", "img_r1")}
            print(
                f"{row['name']:>14}: {row['speedup']:6.1f}x faster, R@1 gap i2t {row['r1_gap']['txt_r1']:+.2f} "
                f"t2i {row['r1_gap']['img_r1']:+.2f} points"
            )

    if args.output:
        report = {
            "args": vars(args),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "training": training,
            "itc_only": itc,
            "two_stage": rows,
            "full_ranking": full,
        }
        with open(args.output, "w") as file:
            json.dump(report, file, indent=2)
        print(f"\nWrote {args.output}")


if __name__ == "__main__":
    main()
