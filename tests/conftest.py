"""Shared fixtures: eps-models with known behaviour, so sampler tests need no training; helpers for the tests of
the evaluation scripts."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from course_lib.checkpoints import save_checkpoint
from course_lib.schedules import make_schedule
from course_lib.unet import UNet

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    """scripts/<name>.py imported as a module: the evaluation scripts are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_unet(path, num_classes=None, seed=0):
    """An untrained, very small UNet on a linear T = 100 schedule, saved to `path`: fast, and enough to exercise an
    evaluation script's pipeline (its samples are noise, so only the plumbing can be checked with it)."""
    torch.manual_seed(seed)
    model = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn=False, num_classes=num_classes)
    save_checkpoint(path, model, make_schedule("linear", T=100), meta={"steps": 0})
    return path


def check_one_model(out, sha, stem):
    """<out>/cache.json holds only the settings of the model with this sha256, and <out>/features/ only their files."""
    entries = json.loads((out / "cache.json").read_text())["entries"]
    assert {e["model_sha256"] for e in entries.values()} == {sha}, f"{out}/cache.json holds another model's settings"
    assert {p.name.split(".")[0] for p in (out / "features").iterdir()} <= {stem({"key": k}) for k in entries}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))




class GaussianEps(torch.nn.Module):
    """The exact (optimal) eps-model for data x_0 ~ N(mu, s^2 I) under a schedule.

    q(x_t) = N(sqrt(abar) mu, (abar s^2 + 1 - abar) I), score = -(x_t - sqrt(abar) mu) / var_t,
    eps*(x_t, t) = -sqrt(1 - abar) * score. DDIM with eta = 0 then follows the exact probability-flow
    ODE as S grows, so inversion error must fall with S.
    """

    def __init__(self, schedule, mu=0.5, s=0.3):
        super().__init__()
        self.alpha_bar, self.mu, self.s = schedule.alpha_bar, mu, s

    def forward(self, x_t, t):
        ab = self.alpha_bar.to(x_t)[t].reshape(-1, *([1] * (x_t.dim() - 1)))  # (B, 1, ..., 1)
        var_t = ab * self.s**2 + 1 - ab
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * self.mu) / var_t


class ToyEps(GaussianEps):
    """The exact eps-model for N(0.3, 0.5^2 I) data plus a smooth bump that mixes neighbouring pixels
    and depends on t, so a sampler that feeds the wrong t, or drops a term, gives a different answer.
    Samples stay bounded, which keeps float32 comparisons meaningful.
    """

    def __init__(self, schedule):
        super().__init__(schedule, mu=0.3, s=0.5)

    def forward(self, x_t, t):
        scale = (t.to(x_t.dtype) / 1000).reshape(-1, *([1] * (x_t.dim() - 1)))  # (B, 1, ..., 1)
        bump = 0.1 * torch.tanh(x_t.roll(1, dims=-1) - 0.5 * x_t) * (0.5 + scale)
        return super().forward(x_t, t) + bump


@pytest.fixture
def one_thread():
    """Small models on a small shared CPU: one thread each, else threads fight for cores (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def schedule64():
    return make_schedule("linear", T=1000, dtype=torch.float64)


@pytest.fixture
def schedule():
    return make_schedule("linear", T=1000)


@pytest.fixture
def toy_eps(schedule):
    return ToyEps(schedule)
