"""Pick the fastest available device: CUDA, then Apple's MPS, then the CPU; and the number of CPU threads."""
import os

import torch


def pick_device(prefer=None):
    """Return a torch.device: `prefer` if given (e.g. "cpu"), else cuda, mps or cpu, in that order.

    Asking for a device that is not available raises a ValueError instead of failing later.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for, but torch.backends.mps.is_available() is False")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_count():
    """CPUs this process may run on (its affinity where the OS tells, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_cpu_threads(threads=None, verbose=True):
    """Set torch's CPU threads for this process by the course's policy, print it and why; returns the number.

    threads: a number to use, or None for the policy: $COURSE_THREADS if set; else 1 when the machine is busy
    (its 1-minute load average is at least max(1, CPUs - 1): other work holds a core); else torch's default.
    Why: on a busy machine torch's threads wait for each other at every operation, so the course's small models
    ran 12x slower per image with the default threads than with one; on a quiet machine the default is 1.45x faster
    than one thread (benchmarks/bench_threads.py).
    """
    reason = "asked for"
    if threads is None and os.environ.get("COURSE_THREADS"):
        threads, reason = int(os.environ["COURSE_THREADS"]), "$COURSE_THREADS"
    if threads is None:
        cpus = cpu_count()
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows; or no /proc/loadavg (a sandbox)
            load = 0.0
        if load >= max(1, cpus - 1):
            threads, reason = 1, f"the machine is busy: load {load:.1f} on {cpus} CPUs"
        else:
            threads, reason = torch.get_num_threads(), f"torch's default; load {load:.1f} on {cpus} CPUs"
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    torch.set_num_threads(threads)
    if verbose:
        print(f"torch CPU threads: {threads} ({reason}; set COURSE_THREADS=n to choose)")
    return threads


def randn(shape, generator=None, device=None, dtype=torch.float32):
    """Standard normal noise drawn on the generator's device, then moved to `device`.

    A CPU generator therefore gives the same numbers whether the model runs on cpu, cuda or mps.
    """
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
