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

`--compare-tree DIR` times another source tree (e.g. a worktree of eeec6b7, from before the redesign, where the
fusion routes were `fuse` options) against this one instead, side by side in one run (`compare.py`: one server
process per tree, steps interleaved, medians, CPU and wall time): the `SCLModel` step of section 1 and the fusion
routes of section 4, each tree through its own API, with the same weights and inputs (checked by comparing the
pooled outputs' sums):

    python benchmarks/bench_model.py --compare-tree /tmp/old-eeec6b7 --threads 1
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import compare  # benchmarks/compare.py
import torch
from compare import timed
from memory import resident_set_during  # benchmarks/memory.py
from transformers import BridgeTowerConfig, BridgeTowerModel

from transformers_scl import SCLConfig, SCLModel

try:
    from transformers_scl.fusion_planning import pooled_fusion
except ModuleNotFoundError as error:  # a tree from before the redesign (`--compare-tree`): `SCLModel.fuse` options
    if error.name != "transformers_scl.fusion_planning":
        raise
    pooled_fusion = None

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


def run_step(model, inputs, backward):
    if backward:
        model.zero_grad(set_to_none=True)
        objective(model(**inputs)).backward()
    else:
        with torch.no_grad():
            model(**inputs)


def time_step(model, inputs, backward):
    """Wall-clock seconds of one step."""
    return timed(lambda: run_step(model, inputs, backward))[0]


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


def serve(args):
    """Subprocess entry (`--serve`, see `compare.py`): the model with `--weights` and this process's `transformers_scl`;
    answers each `{"job", "backward"}` with one timed step, after announcing the pooled-output sums of every job
    (eval mode, no dropout) so that the parent can check both trees compute the same."""
    size = SIZES[args.size]
    scl = scl_model(size)
    scl.load_state_dict(torch.load(args.weights))
    inputs = make_inputs(size, args.batch, args.text_length)
    jobs = {"SCLModel": (scl, inputs), **fusion_variants(scl, inputs)}
    scl.eval()
    with torch.no_grad():
        sums = {
            name: module(**job_inputs).pooler_output.double().sum().item()
            for name, (module, job_inputs) in jobs.items()
        }
    scl.train()

    def step(request):
        wall, cpu = timed(lambda: run_step(*jobs[request["job"]], request["backward"]))
        return {"wall": wall, "cpu": cpu}

    compare.serve(step, pooler_output_sums=sums)


def compare_trees(args):
    """Section 1's `SCLModel` step and section 4's fusion routes, each in this tree and in `--compare-tree` (its own
    API), with the same weights and inputs: one server process per tree, steps interleaved (medians)."""
    torch.manual_seed(0)
    scl = scl_model(SIZES[args.size])
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "scl.pt")
        torch.save(scl.state_dict(), weights)
        command = [sys.executable, __file__, "--serve", "--weights", weights, "--size", args.size]
        command += ["--batch", str(args.batch), "--text-length", str(args.text_length)]
        command += ["--threads", str(args.threads or 1)]
        with compare.TreeServers(command, args.compare_tree) as servers:
            sums = {tree: servers.ready[tree]["pooler_output_sums"] for tree in ("old", "new")}
            requests = {
                (job, backward): {"job": job, "backward": backward}
                for job in sums["new"]
                for backward in (False, True)
            }
            median = compare.medians(servers.interleaved(requests, args.repeats))

    print("\npooler_output sums (eval mode), old / new:")
    for job, new in sums["new"].items():
        old = sums["old"][job]
        agree = abs(new - old) <= 1e-4 * max(1.0, abs(old))
        print(
            f"  {job}: {old:.6f} / {new:.6f}"
            + ("" if agree else "  <-- MISMATCH: the trees compute different outputs")
        )
    print(
        f"\nsize {args.size}, batch {args.batch}, text length {args.text_length}, threads {args.threads or 1}; "
        f"medians of {args.repeats} interleaved steps (old: {args.compare_tree})"
    )
    rows = {}
    for job, backward in requests:
        name = f"{job} {'forward+backward' if backward else 'forward'}"
        rows[name] = (median[("old", (job, backward))], median[("new", (job, backward))])
    compare.print_old_new_table(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--compare-tree",
        default=None,
        help="a source tree to time side by side with this one (e.g. `git worktree add /tmp/old-eeec6b7 eeec6b7`)",
    )
    parser.add_argument("--memory-worker", choices=["scl", "bridgetower"])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        return peak_memory_worker(args.memory_worker, args.size, args.batch, args.text_length)
    if args.serve:
        return serve(args)
    if args.compare_tree:
        return compare_trees(args)

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
    fusion = fusion_variants(scl, image_inputs)
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


def fusion_variants(scl, inputs, texts_per_image=8):
    """The fusion routes of section 4 over embeddings cached from `inputs` (eval mode, so they are deterministic):
    name -> (module, inputs)."""
    training = scl.training
    with torch.no_grad():
        cached = scl.eval()(**inputs)
    scl.train(training)
    embeds = dict(
        text_embeds=cached.text_embeds, image_embeds=cached.image_embeds, attention_mask=inputs["attention_mask"]
    )
    batch = inputs["input_ids"].shape[0]
    pairs = torch.arange(batch).repeat_interleave(texts_per_image)
    candidates = dict(
        text_embeds=cached.text_embeds.repeat(texts_per_image, 1, 1),
        attention_mask=inputs["attention_mask"].repeat(texts_per_image, 1),
    )
    return {
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


class PooledFusion(torch.nn.Module):
    """Fusion of cached embeddings read (and differentiated) through `pooler_output` only: the plain `SCLModel.fuse`,
    or the planned route, last layer at the CLS tokens only: `fusion_planning.pooled_fusion`, or in trees from before
    the redesign (eeec6b7, for `--compare-tree`) `fuse(pooler_only=True, image_index=...)`."""

    def __init__(self, model, planned):
        super().__init__()
        self.model, self.planned = model, planned

    def forward(self, text_embeds, image_embeds, attention_mask, image_index=None):
        text_embeds, image_embeds = text_embeds.requires_grad_(), image_embeds.requires_grad_()
        if not self.planned:
            pooled = self.model.fuse(text_embeds, image_embeds, attention_mask).pooler_output
        elif pooled_fusion is not None:
            pooled = pooled_fusion(self.model, text_embeds, image_embeds, attention_mask, image_index=image_index)
        else:
            pooled = self.model.fuse(
                text_embeds, image_embeds, attention_mask, pooler_only=True, image_index=image_index
            ).pooler_output
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
