"""Compiled / eager time of the model forward and of the pre-training step (forward + backward).

`torch.compile(model, fullgraph=True)` with the default inductor backend, against the same model in eager mode, on
the same inputs; medians of interleaved runs after warm-up (the first compiled call, which compiles, is timed apart).
The pre-training step enables `torch._dynamo.config.capture_dynamic_output_shape_ops` (its MLM logits are gathered
at the masked tokens, a value-dependent shape).

    python benchmarks/bench_compile.py                      # "small" sizes on CPU, 1 thread
    python benchmarks/bench_compile.py --size mid --threads 2
    python benchmarks/bench_compile.py --size base --device cuda --dtype bfloat16
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretraining import SIZES, build_model, make_batch  # noqa: E402

SIZES = {"small": dict(SIZES["mid"], hidden=128, heads=2, image=96), **SIZES}


def timed(job, module, device) -> float:
    """Seconds of one `job(module)`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    job(module)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch._dynamo.config.capture_dynamic_output_shape_ops = True

    size = SIZES[args.size]
    dtype = getattr(torch, args.dtype)
    pretraining = build_model(size, args.device).to(dtype)
    batch = make_batch(size, args.batch, args.frames, args.device)
    pixel_key = "pixel_values" if args.frames is None else "pixel_values_videos"
    batch[pixel_key] = batch[pixel_key].to(dtype)
    base = pretraining.scl.eval()
    model_inputs = {key: batch[key] for key in ("input_ids", "attention_mask", pixel_key)}

    def model_forward(model):
        with torch.no_grad():
            model(**model_inputs)

    def pretraining_step(model):
        pretraining.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    print(
        f"size {args.size}, batch {args.batch}, frames {args.frames or 1}, {args.device}, {args.dtype}, "
        f"threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print("| job | eager (s) | compiled (s) | compiled / eager | first compiled call (s) |")
    print("|---|---|---|---|---|")
    for name, job, module in (
        ("SCLModel forward", model_forward, base),
        ("pre-training step (fwd+bwd)", pretraining_step, pretraining.train()),
    ):
        compiled = torch.compile(module, fullgraph=True)
        first = timed(job, compiled, args.device)
        timed(job, module, args.device)  # warm-up
        times = {"eager": [], "compiled": []}
        for index in range(args.repeats):
            order = ("eager", "compiled") if index % 2 == 0 else ("compiled", "eager")
            for variant in order:
                times[variant].append(timed(job, module if variant == "eager" else compiled, args.device))
        eager, comp = statistics.median(times["eager"]), statistics.median(times["compiled"])
        print(f"| {name} | {eager:.3f} | {comp:.3f} | {comp / eager:.2f} | {first:.1f} |")


if __name__ == "__main__":
    main()
