"""Cost of an SCL pre-training step, measured side by side in one run at equal sizes and batch.

Variants (forward + backward of the total loss; no optimizer step, which is the same for all):

* `SCL`: `SCLForPreTraining` with all five objectives (MLM, ITM, ITC, MVSC, MLSC), every input encoded once.
* `MLM+ITM`: the same model with `pretraining_objectives=["mlm", "itm"]`, the METER-style baseline.
* `recompute-everything`: the reference's computation (spec §2): ITM, MLM, SCL pass A and SCL pass B are full
  `model.scl(...)` calls and ITC runs both towers again, so both towers run 5 times
  (`modeling_tests/naive_pretraining.py`, the oracle of the equivalence tests).

Targets: SCL <= 1.6x MLM+ITM, and SCL <= 0.5x recompute-everything.

A stage breakdown follows: every tower run and fusion pass of both computations timed alone, the two steps rebuilt
from them, and the floor of an exact encode-once step (what could still be shared between passes: only first-layer
work that depends on one modality, since every pass fuses a different pair).

Timings interleave the variants (medians), so machine load affects them alike. Peak memory comes from a fresh
subprocess per variant: its peak resident set during two steps (model included), and the growth over the resident
set just before the first step (activations + gradients).

Default sizes ("mid") keep the base model's proportions at a width that runs on 2 CPU cores in a few minutes:
* width 256 with 4 heads of 64 and a 4x MLP (base: 768, 12 heads of 64, 4x);
* the base's depths: vision 11, text 12, fusion 6+6 layers;
* 160 px with 16 px patches (101 tokens) and 16 text tokens: the base's 325 : 50 image : text tokens at 288 px, and
  its attention share (tokens / 6·width ≈ 7% of a layer's matmuls);
* vocabulary 16755 = 50265 · 256/768, so the MLM decoder (∝ width · vocab) keeps its share of a layer (∝ width²);
* batch 8. `--size base` is the paper's model (use a GPU).

    python benchmarks/bench_pretraining.py
    python benchmarks/bench_pretraining.py --size base --batch 32 --device cuda

`--compare-tree DIR` times another source tree (e.g. a worktree of an older commit) against this one, side by side
in one run, instead of the breakdown (`compare.py`: one server process per tree, steps interleaved, medians):

    python benchmarks/bench_pretraining.py --compare-tree /tmp/old-eeec6b7 --threads 1 --repeats 3
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from transformers.masking_utils import create_bidirectional_mask

import transformers_scl
from transformers_scl.configuration_scl import PRETRAINING_OBJECTIVES, SCLConfig
from transformers_scl.modeling_scl import SCLForPreTraining

# The samplers, wherever the imported tree keeps them (`--compare-tree` runs this script on older trees too).
sample_itm_labels = transformers_scl.sample_itm_labels if hasattr(transformers_scl, "sample_itm_labels") else None
if sample_itm_labels is None:
    from transformers_scl.modeling_scl import sample_itm_labels, sample_itm_negatives, sample_patch_keep_indices
else:
    from transformers_scl import sample_itm_negatives, sample_patch_keep_indices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modeling_tests"))
import compare  # noqa: E402  (benchmarks/compare.py)
from compare import timed  # noqa: E402
from memory import resident_set_during  # noqa: E402  (benchmarks/memory.py)
from naive_pretraining import naive_pretraining_losses  # noqa: E402

SIZES = {
    "mid": dict(hidden=256, heads=4, vision_layers=11, text_layers=12, fusion_layers=6, image=160, text_length=16),
    "base": dict(hidden=768, heads=12, vision_layers=11, text_layers=12, fusion_layers=6, image=288, text_length=50),
}
VARIANTS = ("SCL", "MLM+ITM", "recompute-everything")


def vocab_size(size: dict) -> int:
    return 50265 * size["hidden"] // 768  # RoBERTa's vocabulary, scaled with the width (module docstring)


def build_model(size: dict, device: str) -> SCLForPreTraining:
    hidden, heads = size["hidden"], size["heads"]
    config = SCLConfig(
        text_config=dict(
            model_type="roberta",
            vocab_size=vocab_size(size),
            hidden_size=hidden,
            num_hidden_layers=size["text_layers"],
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=514,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=size["vision_layers"],
            num_attention_heads=heads,
            image_size=size["image"],
            patch_size=16,
        ),
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_fusion_layers=size["fusion_layers"],
        image_size=size["image"],
        itc_projection_dim=hidden * 2 // 3,  # base: 512 of 768
    )
    torch.manual_seed(0)
    return SCLForPreTraining(config).to(device).train()


def make_batch(size: dict, batch_size: int, frames: int | None, device: str) -> dict:
    """Captions with real lengths, MLM (15%) and MLSC (40%, spec §2.4) masks, ITM pairs and kept patches."""
    generator = torch.Generator().manual_seed(0)
    length, mask_id = size["text_length"], vocab_size(size) - 1  # RoBERTa's `<mask>` is its last id (spec §1.3)
    input_ids = torch.randint(5, mask_id, (batch_size, length), generator=generator)
    lengths = torch.randint(length // 3, length + 1, (batch_size,), generator=generator)
    positions = torch.arange(length)
    attention_mask = (positions < lengths[:, None]).long()
    input_ids[:, 0] = 0
    input_ids[torch.arange(batch_size), lengths - 1] = 2
    input_ids[attention_mask == 0] = 1
    real = (attention_mask == 1) & (positions > 0) & (positions < lengths[:, None] - 1)

    mlm = real & (torch.rand(batch_size, length, generator=generator) < 0.15)
    mlm[:, 1] |= real[:, 1] & ~mlm.any(dim=1)  # at least one MLM target per caption
    mlsc = real & (torch.rand(batch_size, length, generator=generator) < 0.4)
    shape = (batch_size, 3, size["image"], size["image"])
    if frames is not None:
        shape = (batch_size, frames, *shape[1:])
    num_patches = (size["image"] // 16) ** 2
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values" if frames is None else "pixel_values_videos": torch.randn(shape, generator=generator),
        "mlm_input_ids": torch.where(mlm, mask_id, input_ids),
        "mlm_labels": torch.where(mlm, input_ids, -100),
        "mlsc_input_ids": torch.where(mlsc, mask_id, input_ids),
        "itm_labels": sample_itm_labels(batch_size, generator),
        "itm_negative_indices": sample_itm_negatives(batch_size, generator=generator),
        "patch_keep_indices": sample_patch_keep_indices(batch_size, num_patches, 0.8, generator=generator),
    }
    return {key: value.to(device) for key, value in batch.items()}


def run_step(model: SCLForPreTraining, batch: dict, variant: str, backward: bool = True):
    model.zero_grad(set_to_none=True)
    model.config.pretraining_objectives = ["mlm", "itm"] if variant == "MLM+ITM" else list(PRETRAINING_OBJECTIVES)
    with torch.set_grad_enabled(backward):
        if variant == "recompute-everything":
            loss = sum(naive_pretraining_losses(model, **batch).values())
        else:
            loss = model(**batch).loss
        if backward:
            loss.backward()


def interleaved_medians(jobs: dict, repeats, device) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each named job: one warm-up each, then `repeats` rounds in alternating order."""
    times = {name: [] for name in jobs}
    for job in jobs.values():
        timed(job, device)
    for index in range(repeats):
        for name in jobs if index % 2 == 0 else reversed(jobs):
            times[name].append(timed(jobs[name], device))
    return {
        name: (statistics.median(t[0] for t in values), statistics.median(t[1] for t in values))
        for name, values in times.items()
    }


def step_jobs(model, batch, backward) -> dict:
    return {variant: functools.partial(run_step, model, batch, variant, backward) for variant in VARIANTS}


def stage_breakdown(model, batch, repeats, device) -> dict[str, tuple[float, float]]:
    """Forward+backward (wall, CPU) seconds of each stage of both computations, timed alone (interleaved medians).

    Each stage starts from detached inputs and back-propagates a sum of the outputs the step differentiates, so the
    tower stages include their own backward and the fusion stages theirs (down to the fusion inputs).
    """
    scl = model.scl
    mask = batch["attention_mask"]
    pixels = {key: batch[key] for key in ("pixel_values", "pixel_values_videos") if key in batch}
    frames = batch["pixel_values_videos"].shape[1] if "pixel_values_videos" in batch else 1
    with torch.no_grad():
        text = scl.encode_text(batch["input_ids"], mask)[0]
        image = scl.encode_image(**pixels)[0]
        dropped = scl.encode_image(**pixels, patch_keep_indices=batch["patch_keep_indices"])[0]
    rows = torch.arange(mask.shape[0], device=mask.device)
    itm_images = torch.where(batch["itm_labels"].bool(), rows, batch["itm_negative_indices"])
    first_text, first_image = scl.cross_modal_text_layers[0], scl.cross_modal_image_layers[0]

    text_mask = create_bidirectional_mask(scl.config, text, mask)

    def leaf(tensor):
        return tensor.clone().requires_grad_()

    def one_modality_work(own_layer, other_layer, states, states_mask):
        """A stream's first self-attention block, and the other stream's first keys and values of it."""
        states = leaf(states)
        attention = other_layer.crossattention.self
        key, value = attention.key(states), attention.value(states)
        return own_layer.attention(states, attention_mask=states_mask)[0].sum() + key.sum() + value.sum()

    def planned(text_embeds, image_embeds, *passes):
        """Passes of `fusion_planning` over detached leaves; the sum of the outputs that carry gradients."""
        from transformers_scl.fusion_planning import FusionPass, fuse_passes

        image_leaf = leaf(image_embeds)
        fusion_passes = [FusionPass(leaf(text_embeds), mask, **options) for options in passes]
        outputs = fuse_passes(scl, image_leaf, fusion_passes, num_frames=frames)
        features = [
            f for o in outputs for f in (o.text_features, o.image_features) if f is not None and f.requires_grad
        ]
        return sum(f.sum() for f in features)

    itm_pass = {"image_index": itm_images, "cls_only": True}
    mlm_pass = {"image_output": None}
    pass_b = {"image_output": "no_grad", "cls_only": True}
    pass_a = {"text_output": "no_grad", "cls_only": True}

    def fused(text_embeds, image_embeds, **kwargs):
        output = scl.fuse(leaf(text_embeds), leaf(image_embeds), mask, num_frames=frames, **kwargs)
        features = [f for f in (output.text_features, output.image_features) if f is not None and f.requires_grad]
        return sum(f.sum() for f in features)

    stages = {
        "text tower, 1 caption (B rows)": lambda: scl.encode_text(batch["input_ids"], mask)[0].sum(),
        "text tower, 3 captions in one call (3B rows)": lambda: scl.encode_text(
            torch.cat([batch["input_ids"], batch["mlm_input_ids"], batch["mlsc_input_ids"]]), mask.repeat(3, 1)
        )[0].sum(),
        "vision tower, complete image": lambda: scl.encode_image(**pixels)[0].sum(),
        "vision tower, patch-dropped image": lambda: scl.encode_image(
            **pixels, patch_keep_indices=batch["patch_keep_indices"]
        )[0].sum(),
        "fusion, full pass": lambda: fused(text, image),
        "fusion, full pass A (dropped image)": lambda: fused(text, dropped),
        "MLM head, every token": lambda: model.mlm_score(leaf(text)).sum(),
        "fusion, ITM (CLS only)": lambda: planned(text, image, itm_pass),
        "fusion, MLM (image stream's last layer skipped)": lambda: planned(text, image, mlm_pass),
        "fusion, pass B (CLS only, image target)": lambda: planned(text, image, pass_b),
        "fusion, pass A (CLS only, text target)": lambda: planned(text, dropped, pass_a),
        # What the step does: the three fusions of the complete image share its first-layer image-only work.
        "fusion, ITM + MLM + pass B sharing the image's first-layer work": lambda: planned(
            text, image, itm_pass, mlm_pass, pass_b
        ),
        # Passes fuse different pairs, so all they could share is first-layer work that depends on one modality. The
        # image's is shared above; the complete text's (its first self-attention, and the image stream's first keys
        # and values of it) would be shared by ITM and pass A.
        "image-only first-layer work": lambda: one_modality_work(first_image, first_text, image, None),
        "text-only first-layer work": lambda: one_modality_work(first_text, first_image, text, text_mask),
    }

    def job(stage):
        def forward_backward():
            model.zero_grad(set_to_none=True)
            stage().backward()

        return forward_backward

    return interleaved_medians({name: job(stage) for name, stage in stages.items()}, repeats, device)


def print_breakdown(stage: dict[str, float], measured: dict[str, float]):
    """The two steps rebuilt from their stages, and the floor of an exact encode-once step."""
    text1, text3 = stage["text tower, 1 caption (B rows)"], stage["text tower, 3 captions in one call (3B rows)"]
    vision, dropped = stage["vision tower, complete image"], stage["vision tower, patch-dropped image"]
    reference_towers = 5 * text1 + 4 * vision + dropped  # ITM, MLM, ITC, pass A, pass B (spec §2)
    reference_fusion = 3 * stage["fusion, full pass"] + stage["fusion, full pass A (dropped image)"]
    ours_towers = text3 + vision + dropped
    ours_fusion = (
        stage["fusion, ITM + MLM + pass B sharing the image's first-layer work"]
        + stage["fusion, pass A (CLS only, text target)"]
    )
    shareable = stage["text-only first-layer work"]  # ITM and pass A fuse the same complete text
    print("\nWhere the time goes: forward+backward of each stage alone (medians, CPU s on CPU)")
    print("| stage | seconds |\n|---|---|")
    for name, value in stage.items():
        print(f"| {name} | {value:.3f} |")
    print(
        f"reference: towers {reference_towers:.2f} (5 text, 4 vision, 1 dropped) + fusion {reference_fusion:.2f} "
        f"+ MLM head {stage['MLM head, every token']:.2f} = "
        f"{reference_towers + reference_fusion + stage['MLM head, every token']:.2f} "
        f"(measured step {measured['recompute-everything']:.2f})"
    )
    print(
        f"encode once: towers {ours_towers:.2f} (3 captions, 1 complete and 1 dropped image) + fusion "
        f"{ours_fusion:.2f} = {ours_towers + ours_fusion:.2f} (measured step, with heads and losses: "
        f"{measured['SCL']:.2f})"
    )
    floor = measured["SCL"] - shareable
    print(
        f"floor, about: the measured step less the text-only first-layer work that ITM and pass A could still share "
        f"({shareable:.2f}) = {floor:.2f}, i.e. {floor / measured['recompute-everything']:.2f}x recompute-everything"
    )


def memory_worker(args):
    """Subprocess entry: peak resident set (MiB) over two training steps of one variant, sampled every 2 ms, and its
    growth over the resident set just before the first step. (`ru_maxrss` would report model construction's peak.)"""
    size = SIZES[args.size]
    model = build_model(size, "cpu")
    batch = make_batch(size, args.batch, args.frames, "cpu")

    def two_steps():
        for _ in range(2):
            run_step(model, batch, args.memory_worker)

    before, peak = resident_set_during(two_steps)
    print(json.dumps({"peak_mib": peak, "growth_mib": peak - before}))


def peak_memory(variant, args) -> dict:
    command = [sys.executable, __file__, "--memory-worker", variant, "--size", args.size, "--batch", str(args.batch)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.frames:
        command += ["--frames", str(args.frames)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cuda_peak_memory(model, batch, variant) -> float:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run_step(model, batch, variant)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def serve(args):
    """Subprocess entry (`--serve`, see `compare.py`): build the model with the `transformers_scl` on `PYTHONPATH`,
    then time one step (forward, or forward+backward) of each requested `{"variant", "backward"}`."""
    size = SIZES[args.size]
    model = build_model(size, args.device)
    batch = make_batch(size, args.batch, args.frames, args.device)

    def step(request):
        wall, cpu = timed(
            functools.partial(run_step, model, batch, request["variant"], request["backward"]), args.device
        )
        return {"wall": wall, "cpu": cpu}

    compare.serve(step)


def compare_trees(args):
    """This tree and `--compare-tree` (e.g. a worktree of an older commit) side by side: one server process per tree,
    the same model, batch and seeds, and steps interleaved across trees and variants (medians)."""
    command = [sys.executable, __file__, "--serve", "--size", args.size, "--batch", str(args.batch)]
    command += ["--threads", str(args.threads or 1), "--device", args.device]
    if args.frames:
        command += ["--frames", str(args.frames)]
    modes = (False, True) if args.compare_forward else (True,)
    requests = {
        (variant, backward): {"variant": variant, "backward": backward} for variant in VARIANTS for backward in modes
    }
    with compare.TreeServers(command, args.compare_tree) as servers:
        median = compare.medians(servers.interleaved(requests, args.repeats))
    print(
        f"\nsize {args.size}, batch {args.batch}, threads {args.threads or 1}; medians of {args.repeats} interleaved steps"
    )
    compare.print_old_new_table(
        {
            f"{variant} {'fwd+bwd' if backward else 'forward'}": (
                median[("old", (variant, backward))],
                median[("new", (variant, backward))],
            )
            for variant in VARIANTS
            for backward in reversed(modes)
        },
        title="variant",
    )
    for clock in ("cpu", "wall"):
        for tree in ("old", "new"):
            scl, baseline, naive = (median[(tree, (variant, True))][clock] for variant in VARIANTS)
            print(
                f"{tree} ({clock}): SCL / MLM+ITM = {scl / baseline:.3f}x, SCL / recompute-everything = "
                f"{scl / naive:.3f}x"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="mid")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None, help="video frames (default: images)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--compare-tree",
        default=None,
        help="a source tree to time side by side with this one (e.g. `git worktree add /tmp/old-eeec6b7 eeec6b7`)",
    )
    parser.add_argument("--compare-forward", action="store_true", help="with --compare-tree: time forward-only too")
    parser.add_argument("--memory-worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        return memory_worker(args)
    if args.serve:
        return serve(args)
    if args.compare_tree:
        return compare_trees(args)

    size = SIZES[args.size]
    model = build_model(size, args.device)
    batch = make_batch(size, args.batch, args.frames, args.device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"size {args.size} {size}, batch {args.batch}, frames {args.frames or 1}, {params:.1f}M parameters, "
        f"device {args.device}, threads {torch.get_num_threads()}"
    )
    forward = interleaved_medians(step_jobs(model, batch, False), args.repeats, args.device)
    train = interleaved_medians(step_jobs(model, batch, True), args.repeats, args.device)
    if args.device == "cpu":
        memory = {variant: peak_memory(variant, args) for variant in VARIANTS}
    else:
        memory = {
            variant: {"peak_mib": float("nan"), "growth_mib": cuda_peak_memory(model, batch, variant)}
            for variant in VARIANTS
        }

    print("\nMedians over interleaved steps; CPU = process CPU time (less sensitive to other load on the machine).")
    print(
        "| variant | forward wall (s) | fwd+bwd wall (s) | fwd+bwd CPU (s) | peak RSS (MiB) | growth in steps (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        m = memory[variant]
        print(
            f"| {variant} | {forward[variant][0]:.3f} | {train[variant][0]:.3f} | {train[variant][1]:.3f} | "
            f"{m['peak_mib']:.0f} | {m['growth_mib']:.0f} |"
        )
    for clock, index in (("wall", 0), ("CPU", 1)):
        scl, baseline, naive = (train[variant][index] for variant in VARIANTS)
        print(
            f"{clock}: SCL / MLM+ITM = {scl / baseline:.2f}x (target <= 1.6x); "
            f"SCL / recompute-everything = {scl / naive:.2f}x (target <= 0.5x)"
        )
    clock = 1 if args.device == "cpu" else 0  # CPU time on CPU
    stages = stage_breakdown(model, batch, args.repeats, args.device)
    print_breakdown(
        {name: times[clock] for name, times in stages.items()},
        {variant: train[variant][clock] for variant in VARIANTS},
    )
    growth = {variant: memory[variant]["growth_mib"] for variant in VARIANTS}
    print(
        f"memory growth: SCL / MLM+ITM = {growth['SCL'] / growth['MLM+ITM']:.2f}x, "
        f"SCL / recompute-everything = {growth['SCL'] / growth['recompute-everything']:.2f}x"
    )


if __name__ == "__main__":
    main()
