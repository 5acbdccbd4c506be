"""A small MNIST classifier whose penultimate features define the course's FID and KID.

FID and KID compare two image sets through a feature extractor. The usual one is Inception-v3
trained on ImageNet; this course uses its own small CNN instead: it ships with the course (offline),
it was trained on 28x28 grayscale digits (Inception wants 299x299 colour photos), and its
D = 64 features make FID stable at a few hundred samples (a 64x64 covariance, not 2048x2048).

    classifier = load_classifier()                  # the shipped weights, eval mode
    features = classifier.features(x)               # x: (B, 1, 28, 28) in [-1, 1] -> (B, 64)
    logits = classifier(x)                          # (B, 10)
    mu, sigma = reference_stats()                   # of the real (shipped) train split, float64

The shipped file `course_lib/data/mnist_classifier.pt` is one dict of plain data (torch.load with
weights_only=True): format_version, model_config, state_dict, reference (mu, sigma, n and source of
the train-split features) and meta (accuracy, steps, seed, ...). `scripts/train_classifier.py`
reproduces it; `course_lib/data/mnist_classifier.md` is its model card.
"""
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSIFIER_PATH = Path(__file__).resolve().parent / "data" / "mnist_classifier.pt"
FORMAT_VERSION = 1


class MNISTClassifier(nn.Module):
    """Three 3x3 conv layers (28 -> 14 -> 7 -> 3 pixels), a `feature_dim` layer, then 10 logits.

    Input (B, 1, 28, 28) in [-1, 1]. `penultimate(x)` -> (B, feature_dim), the post-ReLU layer the
    head reads; `features(x)` = penultimate(x) * feature_scale, used for FID/KID; `forward(x)` -> logits
    (B, 10). feature_scale is a fixed number set after training so that the real train digits have
    mean |f|^2 / D = 1: KID's kernel (u.v / D + 1)^3 then works on O(1) values, as with Inception.
    """

    def __init__(self, channels=(16, 32, 64), feature_dim=64, dropout=0.3):
        super().__init__()
        c1, c2, c3 = channels
        self.channels, self.feature_dim, self.dropout = tuple(channels), feature_dim, dropout
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc = nn.Linear(c3 * 3 * 3, feature_dim)
        self.head = nn.Linear(feature_dim, 10)
        self.register_buffer("feature_scale", torch.ones(()))  # set by scripts/train_classifier.py

    def config(self):
        """The constructor arguments, as plain data, so MNISTClassifier(**config) rebuilds the model."""
        return {"channels": list(self.channels), "feature_dim": self.feature_dim, "dropout": self.dropout}

    def penultimate(self, x):
        """The post-ReLU penultimate layer: x (B, 1, 28, 28) in [-1, 1] -> (B, feature_dim), non-negative."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"the classifier takes images of shape (B, 1, 28, 28) in [-1, 1], got {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, c2, 7, 7)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (B, c3, 3, 3)
        return F.relu(self.fc(h.flatten(1)))  # (B, c3 * 9) -> (B, feature_dim)

    def features(self, x):
        """FID/KID features: x (B, 1, 28, 28) in [-1, 1] -> penultimate(x) * feature_scale, (B, feature_dim)."""
        return self.penultimate(x) * self.feature_scale

    def logits_from_features(self, features):
        """The logits (B, 10) that eval-mode forward() gives, from stored `features(x)` (B, feature_dim)."""
        return self.head(features / self.feature_scale)

    def forward(self, x):
        """Logits (B, 10) for images x (B, 1, 28, 28) in [-1, 1]."""
        h = F.dropout(self.penultimate(x), self.dropout, self.training)
        return self.head(h)


def read_classifier_file(path=None):
    """torch.load the shipped classifier dict (weights_only=True) and check it is one of ours."""
    path = CLASSIFIER_PATH if path is None else Path(path)
    if not os.path.isfile(path):
        raise ValueError(f"no classifier file at {str(path)!r}; train one with `python scripts/train_classifier.py`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, ...
        raise ValueError(f"classifier file {str(path)!r} is corrupt or truncated ({type(err).__name__}: "
                         f"{str(err)[:200]}); re-create it with `python scripts/train_classifier.py`") from err
    missing = [k for k in ("format_version", "model_config", "state_dict", "reference")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{str(path)!r} is not a course classifier file: missing keys {missing}")
    if data["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format_version {data['format_version']}, newer than this course_lib")
    return data


def load_classifier(path=None, device=None):
    """The shipped MNISTClassifier (or the one saved at `path`), in eval mode on `device` (default CPU)."""
    data = read_classifier_file(path)
    model = MNISTClassifier(**data["model_config"])
    model.load_state_dict(data["state_dict"])
    return model.to(torch.device("cpu") if device is None else device).eval()


def reference_stats(path=None):
    """(mu, sigma) of the classifier's features on the real train split: float64, (D,) and (D, D)."""
    reference = read_classifier_file(path)["reference"]
    return reference["mu"].double(), reference["sigma"].double()


@torch.no_grad()
def embed(images, classifier, batch_size=500, device=None):
    """Run the classifier over images (N, 1, 28, 28) in [-1, 1], in batches.

    Returns (features (N, D), logits (N, 10)), float32 on the CPU. `device` defaults to the classifier's.
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28) in [-1, 1], got {tuple(images.shape)}")
    device = next(classifier.parameters()).device if device is None else torch.device(device)
    features, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device=device, dtype=torch.float32)
        h = classifier.penultimate(x)  # (b, D)
        features.append((h * classifier.feature_scale).cpu())
        logits.append(classifier.head(h).cpu())  # (b, 10), as forward() in eval mode (no dropout)
    return torch.cat(features), torch.cat(logits)
