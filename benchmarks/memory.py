"""Peak resident-set measurement for CPU benchmarks (CPU has no allocator statistics like CUDA's)."""

import ctypes
import resource
import threading
import time
from collections.abc import Callable


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def resident_set_during(run: Callable[[], None], interval: float = 0.002) -> tuple[float, float]:
    """Run `run()` while sampling the resident set every `interval` seconds; return `(baseline, peak)` in MiB.

    Freed memory is handed back to the OS first, so the baseline excludes earlier temporaries (model construction);
    `ru_maxrss` would report construction's peak instead.
    """
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline, peak, done = current_rss_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_mib())
            time.sleep(interval)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return baseline, peak[0]
