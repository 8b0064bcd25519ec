"""Two source trees timed side by side in one run (the benchmarks' `--compare-tree DIR`).

The benchmark script starts itself twice as a server (`--serve`): once with `PYTHONPATH=DIR/src` (the "old" tree,
e.g. a worktree of an older commit) and once with this repository's `src` (the "new" tree), so each process imports
its own `transformers_scl`. The parent sends the same requests to both, interleaved across trees and jobs with the
order reversed every other round, and takes medians, so load on the machine affects both trees alike.

Protocol: one JSON object a line. A server first prints `{"ready": <its transformers_scl file>, ...}`, then answers
each request line with one JSON line (`{"wall": s, "cpu": s, ...}` for timed jobs).
"""

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

THIS_SRC = str(Path(__file__).resolve().parents[1] / "src")


def timed(job: Callable[[], object], device: str = "cpu") -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call of `job`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    job()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def serve(handler: Callable[[dict], dict], **ready):
    """Server side: announce readiness (with `ready`'s fields), then answer each JSON request on stdin."""
    import transformers_scl

    print(json.dumps({"ready": transformers_scl.__file__, **ready}), flush=True)
    for line in sys.stdin:
        print(json.dumps(handler(json.loads(line))), flush=True)


class TreeServers:
    """One server process per tree, running `command` with that tree's `src` first on `PYTHONPATH`.

    `ready[tree]` holds each server's first line. Use as a context manager, so the servers end with the block.
    """

    def __init__(self, command: list[str], compare_tree: str):
        if not (Path(compare_tree) / "src" / "transformers_scl").is_dir():
            raise ValueError(f"--compare-tree {compare_tree!r} has no src/transformers_scl.")
        trees = {"old": str(Path(compare_tree).resolve() / "src"), "new": THIS_SRC}
        self.processes, self.ready = {}, {}
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": src}
            self.processes[name] = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
            self.ready[name] = self._read(name)
            print(f"{name}: {self.ready[name]['ready']}", flush=True)

    def _read(self, tree: str) -> dict:
        line = self.processes[tree].stdout.readline()
        if not line:
            raise RuntimeError(f"The {tree} tree's server ended without an answer (its error is above).")
        return json.loads(line)

    def ask(self, tree: str, request: dict) -> dict:
        self.processes[tree].stdin.write(json.dumps(request) + "\n")
        self.processes[tree].stdin.flush()
        return self._read(tree)

    def interleaved(self, requests: dict[str, dict], repeats: int, warm_up: bool = True) -> dict[tuple, list[dict]]:
        """Every named request on both trees: an optional warm-up round, then `repeats` rounds in alternating order.
        Returns the answers per `(tree, name)`."""
        keys = [(tree, name) for name in requests for tree in self.processes]
        if warm_up:
            for tree, name in keys:
                self.ask(tree, requests[name])
        answers = {key: [] for key in keys}
        for index in range(repeats):
            for tree, name in keys if index % 2 == 0 else reversed(keys):
                answers[(tree, name)].append(self.ask(tree, requests[name]))
        return answers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in self.processes.values():
            process.stdin.close()
        for process in self.processes.values():
            process.wait()


def medians(answers: dict[tuple, list[dict]]) -> dict[tuple, dict[str, float]]:
    """Median wall and CPU seconds per key of `TreeServers.interleaved`'s answers."""
    return {
        key: {clock: statistics.median(answer[clock] for answer in values) for clock in ("wall", "cpu")}
        for key, values in answers.items()
    }


def print_old_new_table(rows: dict[str, tuple[dict, dict]], title: str = "job"):
    """`rows`: name -> (old, new) `{"wall", "cpu"}` seconds; a Markdown table with new/old for both clocks."""
    print(f"| {title} | old CPU (s) | new CPU (s) | new/old CPU | old wall (s) | new wall (s) | new/old wall |")
    print("|---|---|---|---|---|---|---|")
    for name, (old, new) in rows.items():
        print(
            f"| {name} | {old['cpu']:.3f} | {new['cpu']:.3f} | {new['cpu'] / old['cpu']:.3f} | {old['wall']:.3f} | "
            f"{new['wall']:.3f} | {new['wall'] / old['wall']:.3f} |"
        )
