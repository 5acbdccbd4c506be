"""Train the course's MNIST classifier, whose features define FID and KID, and ship it.

    python scripts/train_classifier.py

Trains `course_lib.classifier.MNISTClassifier` on the shipped train split (4,500 digits) with light
augmentation (random shifts of up to 2 pixels, rotations of up to 10 degrees, scaling by 0.9 to 1.1),
Adam with a cosine learning-rate decay, seed 0. Reports the accuracy on the 500 held-out test digits,
then writes
  course_lib/data/mnist_classifier.pt   weights, config, and the reference statistics (mu, sigma)
                                        of the features of the real train split, float64
  course_lib/data/mnist_classifier.md   the model card
"""
import argparse
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_lib.classifier import FORMAT_VERSION, MNISTClassifier, embed
from course_lib.metrics import feature_stats
from course_lib.mnist import load_mnist

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "course_lib" / "data"
MIN_ACCURACY = 0.97


def augment(x, generator):
    """Random affine jitter of a batch x (B, 1, 28, 28) in [-1, 1]: shift <= 2 px, rotation <= 10 deg, scale 0.9-1.1."""
    B = x.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(B, generator=generator)  # (B,)
    angle, scale = uniform(-10, 10) * math.pi / 180, uniform(0.9, 1.1)
    shift = uniform(-2, 2), uniform(-2, 2)  # pixels
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[0] * 2 / 28], 1),
                         torch.stack([sin, cos, shift[1] * 2 / 28], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, 28, 28, 2)
    # sample x + 1 with zero padding, so the border is background (-1) after shifting back
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


@torch.no_grad()
def accuracy(model, images, labels):
    """Fraction of images (N, 1, 28, 28) whose argmax logit equals the label."""
    model.eval()
    _, logits = embed(images, model)
    return float((logits.argmax(1) == labels).float().mean())


def write_card(path, meta):
    card = f"""# Model card: mnist_classifier

The course's MNIST classifier, `course_lib.classifier.MNISTClassifier`: its 64 penultimate features
define the course's FID and KID (`course_lib.metrics`), in place of Inception-v3.

| what | value |
| --- | --- |
| architecture | `MNISTClassifier({", ".join(f"{k}={v}" for k, v in meta["model_config"].items())})`: 3 conv 3x3 + max-pool, fc to 64 features, fc to 10 logits |
| parameters | {meta["parameters"]:,} |
| data | the shipped MNIST subset, train split ({meta["train_examples"]:,} digits), 28x28, in [-1, 1] |
| augmentation | random shift <= 2 px, rotation <= 10 degrees, scale 0.9 to 1.1 |
| optimizer | Adam, lr {meta["lr"]} with cosine decay to 0, batch {meta["batch_size"]}, dropout {meta["model_config"]["dropout"]} |
| steps | {meta["steps"]:,} ({meta["epochs"]} epochs) |
| seed | {meta["seed"]} |
| held-out accuracy | {100 * meta["test_accuracy"]:.1f} % on the 500 shipped test digits ({meta["test_errors"]} errors) |
| train accuracy | {100 * meta["train_accuracy"]:.1f} % (no augmentation) |
| feature scale | {meta["feature_scale"]:.4g} (so the train digits' features have mean square 1) |
| reference statistics | mean and covariance (float64) of the 64 features of the {meta["train_examples"]:,} train digits |
| wall time | {meta["wall_time_s"]:.0f} s on {meta["machine"]} |

Reproduce: `python scripts/train_classifier.py`. Load: `course_lib.classifier.load_classifier()`;
reference statistics: `course_lib.classifier.reference_stats()`.
"""
    path.write_text(card)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DATA / "mnist_classifier.pt")
    args = parser.parse_args(argv)

    start = time.time()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_mnist("train", source="shipped")
    x_test, y_test = load_mnist("test", source="shipped")
    model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    steps = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    bar = tqdm(total=steps, desc="classifier")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start_index in range(0, len(x_train), args.batch_size):
            index = order[start_index:start_index + args.batch_size]
            x = augment(x_train[index], generator)
            loss = F.cross_entropy(model(x), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", test_acc=f"{accuracy(model, x_test, y_test):.3f}")
    bar.close()

    model.eval()
    test_accuracy, train_accuracy = accuracy(model, x_test, y_test), accuracy(model, x_train, y_train)
    with torch.no_grad():  # fix the feature scale: mean |f|^2 / D = 1 on the train digits (see MNISTClassifier)
        raw, _ = embed(x_train, model)  # feature_scale is still 1 here
        model.feature_scale.fill_(float(raw.square().mean().rsqrt()))
    features, _ = embed(x_train, model)
    mu, sigma = feature_stats(features)
    wall_time = time.time() - start
    meta = {"test_accuracy": test_accuracy, "test_errors": round((1 - test_accuracy) * len(x_test)),
            "train_accuracy": train_accuracy, "steps": steps, "epochs": args.epochs, "seed": args.seed,
            "lr": args.lr, "batch_size": args.batch_size, "train_examples": len(x_train),
            "parameters": sum(p.numel() for p in model.parameters()), "model_config": model.config(),
            "wall_time_s": wall_time, "feature_scale": float(model.feature_scale),
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    print(f"[classifier] held-out accuracy {100 * test_accuracy:.1f} % ({meta['test_errors']} of {len(x_test)} "
          f"wrong), train {100 * train_accuracy:.1f} %, {steps} steps, {wall_time:.0f} s")
    if test_accuracy < MIN_ACCURACY:
        raise SystemExit(f"held-out accuracy {test_accuracy:.3f} is below the required {MIN_ACCURACY}; "
                         "nothing written. Train longer (--epochs) or check the data.")
    checkpoint = {"format_version": FORMAT_VERSION, "model_config": model.config(),
                  "state_dict": model.state_dict(),
                  "reference": {"mu": mu, "sigma": sigma, "n": len(x_train), "split": "train", "source": "shipped"},
                  "meta": meta}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, str(args.out) + ".tmp")
    Path(str(args.out) + ".tmp").replace(args.out)
    write_card(args.out.with_suffix(".md"), meta)
    print(f"[classifier] wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB) and its model card")


if __name__ == "__main__":
    main()
