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

`--compare-tree DIR` times another source tree (e.g. a worktree of eeec6b7, from before the redesign) against this
one instead: the model is trained once here and saved, then each tree's `evaluate_retrieval` (`compare.py`: one
server process per tree, loading the saved model with its own code) ranks the same gallery, ITC only, two-stage for
each k and full ranking, interleaved across trees (old and new run each setting back to back, the order reversed
every other round; medians of `--repeats`). It prints old, new and new/old times and both trees' recalls, which
must be identical (same weights, same maths), with a warning if they are not:

    python benchmarks/bench_retrieval.py --num-images 1000 --compare-tree /tmp/old-eeec6b7

Check the harness with this tree in both slots (`--compare-tree .`): on 2 CPU cores the second slot measured about
1.11x the first on full ranking with identical code, so read a full-ranking ratio against that control.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import compare  # benchmarks/compare.py
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
    parser.add_argument(
        "--compare-tree",
        default=None,
        help="a source tree to time side by side with this one (e.g. `git worktree add /tmp/old-eeec6b7 eeec6b7`)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="with --compare-tree: rounds per setting (medians)")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # a directory with the model and gallery
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


RECALLS = ("txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10")


def serve(args):
    """Subprocess entry (`--serve DIR`, see `compare.py`): load the model saved in `DIR/model` with this process's
    `transformers_scl`, and run `evaluate_retrieval` on the gallery `DIR/gallery.pt` for each request's arguments
    (`{"k": k}` or `{"full_ranking": true}`), answering its times, pair count and recalls."""
    model, info = SCLForImageTextRetrieval.from_pretrained(os.path.join(args.serve, "model"), output_loading_info=True)
    if any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        raise RuntimeError(f"The saved model did not load exactly: {info}")
    model.to(args.device).eval()
    gallery = torch.load(os.path.join(args.serve, "gallery.pt"))

    def rank(request):
        result = []
        wall, cpu = compare.timed(
            lambda: result.append(
                evaluate_retrieval(
                    model,
                    gallery["input_ids"],
                    gallery["attention_mask"],
                    gallery["pixel_values"],
                    txt2img=gallery["txt2img"],
                    pair_batch_size=args.pair_batch_size,
                    image_batch_size=512,
                    progress=False,
                    **request,
                )
            ),
            args.device,
        )
        (result,) = result
        return {
            "wall": wall,
            "cpu": cpu,
            "itc_wall": result.timings["encode"] + result.timings["itc"],
            "pairs": result.num_pairs,
            "metrics": {key: result.metrics[key] for key in RECALLS},
            "itc_metrics": {key: result.itc_metrics[key] for key in RECALLS},
        }

    compare.serve(rank)


def compare_trees(args, model, tokens, pixel_values, txt2img) -> dict:
    """`evaluate_retrieval` of this tree and of `--compare-tree` on the same saved model and gallery, interleaved."""
    requests = {f"two-stage k={k}": {"k": k} for k in args.ks}
    if not args.skip_full_ranking:
        requests["full ranking"] = {"full_ranking": True}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(os.path.join(tmp, "model"))
        gallery = dict(tokens, pixel_values=pixel_values, txt2img=txt2img)
        torch.save(gallery, os.path.join(tmp, "gallery.pt"))
        command = [sys.executable, __file__, "--serve", tmp, "--device", args.device, "--threads", str(args.threads)]
        command += ["--pair-batch-size", str(args.pair_batch_size)]
        with compare.TreeServers(command, args.compare_tree) as servers:
            for tree in ("old", "new"):  # warm-up, on the cheapest setting
                servers.ask(tree, requests[f"two-stage k={min(args.ks)}"])
            answers = servers.interleaved(requests, args.repeats, warm_up=False)
    median = compare.medians(answers)
    itc_wall = {
        tree: float(np.median([answer["itc_wall"] for answer in answers[(tree, f"two-stage k={args.ks[0]}")]]))
        for tree in ("old", "new")
    }
    print(
        f"\nold: {args.compare_tree}; medians of {args.repeats} interleaved round(s), {args.threads} thread(s)\n"
        f"ITC only (encoding + ITC scores of the k={args.ks[0]} runs, wall): old {itc_wall['old']:.2f} s, new "
        f"{itc_wall['new']:.2f} s, new/old {itc_wall['new'] / itc_wall['old']:.3f}"
    )
    compare.print_old_new_table(
        {name: (median[("old", name)], median[("new", name)]) for name in requests}, title="evaluate_retrieval"
    )

    first = {key: values[0] for key, values in answers.items()}
    recalls = {
        ("ITC only", tree): first[(tree, f"two-stage k={args.ks[0]}")]["itc_metrics"] for tree in ("old", "new")
    }
    recalls.update({(name, tree): first[(tree, name)]["metrics"] for name in requests for tree in ("old", "new")})
    print("\n| ranking | pairs fused | old R@1 i2t / t2i | new R@1 i2t / t2i |\n|---|---|---|---|")
    mismatches = []
    for name in ["ITC only", *requests]:
        old, new = recalls[(name, "old")], recalls[(name, "new")]
        pairs = "" if name == "ITC only" else f"{first[('new', name)]['pairs']:,}"
        print(
            f"| {name} | {pairs} | {old['txt_r1']:.2f} / {old['img_r1']:.2f} | {new['txt_r1']:.2f} / {new['img_r1']:.2f} |"
        )
        different = [key for key in RECALLS if old[key] != new[key]]
        if name != "ITC only" and first[("old", name)]["pairs"] != first[("new", name)]["pairs"]:
            different.append("pairs fused")
        if different:
            mismatches.append(f"{name}: {', '.join(different)}")
    if mismatches:
        print("\nWARNING: the trees' results differ (same weights and gallery, so they should be identical):")
        for line in mismatches:
            print(f"  {line}")
    else:
        print("\nBoth trees' recalls (R@1/5/10, both directions) and fused pair counts are identical.")
    return {
        "compare_tree": args.compare_tree,
        "itc_only_wall": itc_wall,
        "timings": {f"{tree} {name}": value for (tree, name), value in median.items()},
        "recalls": {f"{tree} {name}": value for (name, tree), value in recalls.items()},
        "mismatches": mismatches,
    }


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.serve:
        return serve(args)
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
    if args.compare_tree:
        comparison = compare_trees(args, model, dict(tokens), test_pixels, txt2img)
        if args.output:
            with open(args.output, "w") as file:
                json.dump({"args": vars(args), "training": training, **comparison}, file, indent=2)
            print(f"\nWrote {args.output}")
        return
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
