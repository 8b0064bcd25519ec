"""SCLModel speed and memory, measured side by side in one run.

1. SCLModel vs transformers' BridgeTowerModel at matched sizes (same ViT, RoBERTa and 6-layer fusion widths, same
   batch, text length and resolution): forward and forward+backward time, and peak memory.
2. SCLModel with `sdpa` vs `eager` attention.
3. Video cost at F = 1, 2, 4, 8 frames.
4. Fusion read only through `pooler_output` (ITM, VQA, NLVR2, retrieval re-ranking): the full last layer
   (`SCLModel.fuse`) against `fusion_planning.pooled_fusion`, which runs it at the CLS tokens only; and, for 8 texts
   per image (retrieval candidates), the image rows repeated per pair against `pooled_fusion(image_index=...)`,
   which runs the image-only part of the first layer once per image.

Timings interleave the variants and report medians, so machine load affects them alike. Peak memory is the
resident-set growth of a fresh subprocess per variant during its training steps (CPU has no allocator statistics).

    python benchmarks/bench_model.py                 # "small" sizes, a few minutes on 2 CPU cores
    python benchmarks/bench_model.py --size base     # the paper's base model (use a GPU or patience)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import torch
from memory import resident_set_during  # benchmarks/memory.py
from transformers import BridgeTowerConfig, BridgeTowerModel

from transformers_scl import SCLConfig, SCLModel

SIZES = {
    # The base architecture's proportions at a width that runs on a laptop CPU (BridgeTower needs heads = width/64).
    "small": dict(hidden=256, heads=4, intermediate=1024, uni_layers=12, fusion_layers=6, image=224, vocab=50265),
    "base": dict(hidden=768, heads=12, intermediate=3072, uni_layers=12, fusion_layers=6, image=288, vocab=50265),
}


def scl_model(size, attn="sdpa"):
    config = SCLConfig(
        text_config=dict(
            model_type="roberta",
            vocab_size=size["vocab"],
            hidden_size=size["hidden"],
            num_hidden_layers=size["uni_layers"],
            num_attention_heads=size["heads"],
            intermediate_size=size["intermediate"],
        ),
        vision_config=dict(
            hidden_size=size["hidden"],
            # BridgeTower pairs every text layer with a ViT block, so it cannot run SCL's 11-block ViT beside a 12-layer
            # RoBERTa: both get the same 12-block ViT here (SCL's default 11 blocks are 1/12 cheaper still).
            num_hidden_layers=size["uni_layers"],
            num_attention_heads=size["heads"],
            intermediate_size=size["intermediate"],
            image_size=size["image"],
        ),
        hidden_size=size["hidden"],
        num_attention_heads=size["heads"],
        intermediate_size=size["intermediate"],
        num_fusion_layers=size["fusion_layers"],
        image_size=size["image"],
    )
    return SCLModel._from_config(config, attn_implementation=attn)


def bridgetower_model(size):
    config = BridgeTowerConfig(
        text_config=dict(
            vocab_size=size["vocab"],
            hidden_size=size["hidden"],
            num_hidden_layers=size["uni_layers"],
            num_attention_heads=size["heads"],
            intermediate_size=size["intermediate"],
        ),
        vision_config=dict(
            hidden_size=size["hidden"],
            num_hidden_layers=size["uni_layers"],
            image_size=size["image"],
            patch_size=16,
        ),
        hidden_size=size["hidden"],
        num_attention_heads=size["heads"],
        num_hidden_layers=size["fusion_layers"],
    )
    return BridgeTowerModel(config)


def make_inputs(size, batch, text_length, frames=None, bridgetower=False):
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (batch, text_length))
    mask = torch.ones_like(ids)
    image = size["image"]
    if bridgetower:
        return dict(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=torch.randn(batch, 3, image, image),
            pixel_mask=torch.ones(batch, image, image, dtype=torch.long),
        )
    if frames is None:
        return dict(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(batch, 3, image, image))
    return dict(input_ids=ids, attention_mask=mask, pixel_values_videos=torch.randn(batch, frames, 3, image, image))


def objective(output):
    # Text, image and pooled outputs all receive gradient, as under the pre-training losses.
    return output.text_features.mean() + output.image_features.mean() + output.pooler_output.mean()


def time_step(model, inputs, backward):
    start = time.perf_counter()
    if backward:
        model.zero_grad(set_to_none=True)
        objective(model(**inputs)).backward()
    else:
        with torch.no_grad():
            model(**inputs)
    return time.perf_counter() - start


def interleaved_medians(variants, repeats, backward):
    """`variants`: name -> (model, inputs). Runs one warm-up each, then `repeats` rounds in alternating order."""
    times = {name: [] for name in variants}
    for model, inputs in variants.values():
        time_step(model, inputs, backward)
    for round_index in range(repeats):
        names = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in names:
            times[name].append(time_step(*variants[name], backward))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_worker(kind, size_name, batch, text_length):
    """Subprocess entry: peak resident-set growth (MiB) over two forward+backward steps, sampled every 2 ms."""
    size = SIZES[size_name]
    model = bridgetower_model(size) if kind == "bridgetower" else scl_model(size)
    model.train()
    inputs = make_inputs(size, batch, text_length, bridgetower=kind == "bridgetower")

    def two_steps():
        for _ in range(2):
            time_step(model, inputs, backward=True)

    baseline, peak = resident_set_during(two_steps)
    print(json.dumps({"peak_mib": peak - baseline}))


def peak_memory(kind, args):
    command = [sys.executable, __file__, "--memory-worker", kind, "--size", args.size, "--batch", str(args.batch)]
    command += ["--text-length", str(args.text_length)] + (["--threads", str(args.threads)] if args.threads else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--memory-worker", choices=["scl", "bridgetower"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        return peak_memory_worker(args.memory_worker, args.size, args.batch, args.text_length)

    size = SIZES[args.size]
    print(
        f"sizes: {args.size} {size}, batch {args.batch}, text length {args.text_length}, threads {torch.get_num_threads()}"
    )
    scl = scl_model(size).train()
    scl_eager = scl_model(size, attn="eager").train()
    scl_eager.load_state_dict(scl.state_dict())
    bridgetower = bridgetower_model(size).train()
    params = {
        name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in [("SCL", scl), ("BridgeTower", bridgetower)]
    }
    print(f"parameters (M): SCL {params['SCL']:.1f}, BridgeTower {params['BridgeTower']:.1f}")

    image_inputs = make_inputs(size, args.batch, args.text_length)
    variants = {
        "SCL sdpa": (scl, image_inputs),
        "SCL eager": (scl_eager, image_inputs),
        "BridgeTower": (bridgetower, make_inputs(size, args.batch, args.text_length, bridgetower=True)),
    }
    print("\n## 1-2. image-text step time (median seconds)")
    print("| variant | forward | forward+backward |\n|---|---|---|")
    forward = interleaved_medians(variants, args.repeats, backward=False)
    train = interleaved_medians(variants, args.repeats, backward=True)
    for name in variants:
        print(f"| {name} | {forward[name]:.3f} | {train[name]:.3f} |")
    print(
        f"\nSCL / BridgeTower: forward {forward['SCL sdpa'] / forward['BridgeTower']:.2f}x, "
        f"forward+backward {train['SCL sdpa'] / train['BridgeTower']:.2f}x (target <= 0.9x)"
    )
    print(
        f"SCL sdpa / eager: forward {forward['SCL sdpa'] / forward['SCL eager']:.2f}x, "
        f"forward+backward {train['SCL sdpa'] / train['SCL eager']:.2f}x"
    )

    memory = {kind: peak_memory(kind, args) for kind in ("scl", "bridgetower")}
    print(
        f"peak memory growth over 2 training steps (MiB): SCL {memory['scl']:.0f}, BridgeTower "
        f"{memory['bridgetower']:.0f} (ratio {memory['scl'] / memory['bridgetower']:.2f}x, target <= 1.0x)"
    )

    print("\n## 3. video cost (SCL sdpa, median seconds)")
    # The vision tower's frame attention is linear in F by construction. The fusion's image stream attends over all
    # F*(1+N) tokens, as in the reference (spec §1.4), so the whole model grows faster once F*(1+N) is large.
    frames = (1, 2, 4, 8)
    videos = {f: make_inputs(size, args.batch, args.text_length, frames=f) for f in frames}
    tower = {f"F={f}": (VisionOnly(scl), videos[f]) for f in frames}
    whole = {f"F={f}": (scl, videos[f]) for f in frames}
    repeats = max(3, args.repeats // 2)
    results = {
        "vision tower": interleaved_medians(tower, repeats, backward=True),
        "whole model": interleaved_medians(whole, repeats, backward=True),
    }
    print("| frames | vision tower fwd+bwd | per frame | whole model fwd+bwd | per frame |\n|---|---|---|---|---|")
    for f in frames:
        v, w = results["vision tower"][f"F={f}"], results["whole model"][f"F={f}"]
        print(f"| {f} | {v:.3f} | {v / f:.3f} | {w:.3f} | {w / f:.3f} |")
    for name, timing in results.items():
        print(f"{name}: cost(F=8) / cost(F=1) = {timing['F=8'] / timing['F=1']:.2f}x (linear = 8x)")

    print("\n## 4. pooled-output fusion of cached embeddings (SCL sdpa, median seconds)")
    with torch.no_grad():
        cached = scl(**image_inputs)
    embeds = dict(
        text_embeds=cached.text_embeds, image_embeds=cached.image_embeds, attention_mask=image_inputs["attention_mask"]
    )
    texts_per_image = 8
    pairs = torch.arange(args.batch).repeat_interleave(texts_per_image)
    candidates = dict(
        text_embeds=cached.text_embeds.repeat(texts_per_image, 1, 1),
        attention_mask=image_inputs["attention_mask"].repeat(texts_per_image, 1),
    )
    fusion = {
        "full last layer": (PooledFusion(scl, False), embeds),
        "CLS-only last layer": (PooledFusion(scl, True), embeds),
        f"{texts_per_image} texts per image, repeated images": (
            PooledFusion(scl, True),
            dict(candidates, image_embeds=cached.image_embeds[pairs]),
        ),
        f"{texts_per_image} texts per image, image_index": (
            PooledFusion(scl, True),
            dict(candidates, image_embeds=cached.image_embeds, image_index=pairs),
        ),
    }
    forward = interleaved_medians(fusion, args.repeats, backward=False)
    train = interleaved_medians(fusion, args.repeats, backward=True)
    print("| fusion | forward | forward+backward |\n|---|---|---|")
    for name in fusion:
        print(f"| {name} | {forward[name]:.3f} | {train[name]:.3f} |")
    names = list(fusion)
    for new, old in ((names[1], names[0]), (names[3], names[2])):
        print(
            f"{new} / {old}: forward {forward[new] / forward[old]:.2f}x, forward+backward {train[new] / train[old]:.2f}x"
        )


class PooledFusion(torch.nn.Module):
    """Fusion of cached embeddings read (and differentiated) through `pooler_output` only: the plain `SCLModel.fuse`,
    or the planned route (`fusion_planning.pooled_fusion`, last layer at the CLS tokens only)."""

    def __init__(self, model, planned):
        super().__init__()
        self.model, self.planned = model, planned

    def forward(self, text_embeds, image_embeds, attention_mask, image_index=None):
        from transformers_scl.fusion_planning import pooled_fusion

        text_embeds, image_embeds = text_embeds.requires_grad_(), image_embeds.requires_grad_()
        if self.planned:
            pooled = pooled_fusion(self.model, text_embeds, image_embeds, attention_mask, image_index=image_index)
        else:
            pooled = self.model.fuse(text_embeds, image_embeds, attention_mask).pooler_output
        return SimpleNamespace(text_features=pooled, image_features=pooled, pooler_output=pooled)


class VisionOnly(torch.nn.Module):
    """The vision tower of an `SCLModel`, with an output `objective` can read."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values_videos, **unused):
        hidden = self.model.vision_model(pixel_values_videos=pixel_values_videos).last_hidden_state
        return SimpleNamespace(text_features=hidden[:, :1], image_features=hidden, pooler_output=hidden[:, 0])


if __name__ == "__main__":
    main()
