"""Time the shipped MNIST eps-model's sampling forward pass with 1 thread and with torch's default threads.

A benchmark, not a test: it prints measured numbers and the machine's load, which decide course_lib's thread policy
(`course_lib.device.set_cpu_threads`: one thread when the machine is busy, torch's default otherwise).
One measurement = --calls model calls on a batch of --batch images (what ddim_sample does per step), no grad;
the two thread settings are interleaved over --rounds rounds and the median per round is reported, in
milliseconds per image per model call.

    python benchmarks/bench_threads.py --batch 16 --calls 20 --rounds 3

Measured on a 2-CPU Intel Xeon (torch 2.13 CPU, default threads 2), ms per image per call, median of 3 rounds:
  busy (1-min load 6): 1 thread 6.53, 2 threads 76.32: one thread is 12x faster;
  quiet (other work paused, load 1.3 and falling): 1 thread 3.27, 2 threads 2.26: two threads are 1.45x faster.
Hence the policy: one thread on a busy machine, where the default costs 12x, and torch's default otherwise, where one
thread would cost 1.45x. The 1-minute load average lags by about a minute, so right after other work stops the
policy may still pick one thread: the smaller of the two mistakes.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from course_lib.checkpoints import load_checkpoint
from course_lib.device import cpu_count

MODEL = Path(__file__).resolve().parent.parent / "course_lib" / "data" / "mnist_unet28.pt"


def time_calls(model, x, calls):
    t = torch.full((x.shape[0],), 500, dtype=torch.long)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(calls):
            model(x, t)
    return (time.perf_counter() - start) / (calls * x.shape[0]) * 1000  # ms per image per call


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, _, _ = load_checkpoint(MODEL, device="cpu")
    model.eval()
    x = torch.randn(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    default = torch.get_num_threads()
    settings = sorted({1, default})
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {n: [] for n in settings}
    for n in settings:  # warm-up
        torch.set_num_threads(n)
        time_calls(model, x, 2)
    for _ in range(args.rounds):
        for n in settings:
            torch.set_num_threads(n)
            results[n].append(time_calls(model, x, args.calls))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_count()} CPUs, torch {torch.__version__}, default threads {default}, 1-min load average "
          f"{load_before:.1f} before, {load_after:.1f} after; batch {args.batch}, {args.calls} calls x {args.rounds} rounds")
    for n in settings:
        print(f"  {n} thread{'s' if n > 1 else ' '}: {statistics.median(results[n]):7.2f} ms per image per call "
              f"(rounds: {', '.join(f'{v:.2f}' for v in results[n])})")


if __name__ == "__main__":
    main()
