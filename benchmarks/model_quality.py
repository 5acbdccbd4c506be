"""How good is a shipped eps-model? The two numbers of issue 13's target, with 95 % intervals, in about a minute.

For each checkpoint in course_lib/data/: N DDIM samples (eta = 0, S steps, linspace, one fixed x_T for all models),
the share the course classifier labels with confidence >= 0.9 (real held-out digits: about 97 %), and FID / KID on the
classifier's features against the train split, beside the real-data floor at the same N. A measurement, not a test.

    python benchmarks/model_quality.py mnist_unet28 mnist_unet28_next --n 256 --steps 50
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib import ddim_sample, load_checkpoint, make_timesteps  # noqa: E402
from course_lib.classifier import load_classifier  # noqa: E402
from course_lib.metrics import fid_kid  # noqa: E402
from course_lib.mnist import load_mnist  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "course_lib" / "data"


def confident(images, classifier, threshold=0.9):
    """Share of images whose top class has probability >= threshold, and the half-width of its 95 % interval."""
    with torch.no_grad():
        p = torch.softmax(classifier(images), dim=1).max(dim=1).values
    share = (p >= threshold).float().mean().item()
    return share, 1.96 * (share * (1 - share) / len(images)) ** 0.5


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="checkpoint names in course_lib/data/ (without .pt)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    classifier = load_classifier()
    real, _ = load_mnist("test", source="shipped", verbose=False)
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:args.n]]
    share, half = confident(real, classifier)
    floor = fid_kid(real)
    print(f"real held-out digits (N = {args.n}): confident {share:.1%} +- {half:.1%}, FID {floor['fid']:.2f} (floor), "
          f"KID x1e3 {1e3 * floor['kid']:.1f}")
    x_T = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(123))
    for name in args.names:
        model, schedule, meta = load_checkpoint(DATA / f"{name}.pt")
        start = time.perf_counter()
        with torch.no_grad():
            x0 = ddim_sample(model, x_T, schedule, make_timesteps(1000, args.steps, "linspace"), eta=0.0,
                             progress=False).clamp(-1, 1)
        share, half = confident(x0, classifier)
        scores = fid_kid(x0)
        print(f"{name} ({meta.get('steps')} steps): confident {share:.1%} +- {half:.1%}, FID {scores['fid']:.2f} "
              f"({scores['fid'] / floor['fid']:.1f}x the floor), KID x1e3 {1e3 * scores['kid']:.1f}; "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
