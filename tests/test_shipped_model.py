"""The shipped MNIST eps-model loads offline, matches its model card, and samples."""
import re
from pathlib import Path

import pytest
import torch

from course_lib import ddim_sample, load_checkpoint, make_timesteps
from course_lib.unet import UNet

DATA = Path(__file__).resolve().parent.parent / "course_lib" / "data"
CHECKPOINT, CARD = DATA / "mnist_unet28.pt", DATA / "mnist_unet28.md"


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(CHECKPOINT, expect={"model_class": "UNet"})


def test_loads_as_a_unet_on_the_linear_schedule(shipped):
    model, schedule, meta = shipped
    assert isinstance(model, UNet) and not model.training
    assert schedule.config() == {"name": "linear", "T": 1000}
    assert meta["size"] == 28 and meta["steps"] > 0
    assert CHECKPOINT.stat().st_size < 8 * 2**20, "shipped files stay a few MB"


def test_model_card_states_what_the_checkpoint_holds(shipped):
    model, _, meta = shipped
    card = CARD.read_text()
    params = sum(p.numel() for p in model.parameters())
    assert re.search(rf"\| parameters \| {params:,} \|", card)
    assert re.search(rf"\| steps \| {meta['steps']:,} \|", card)
    assert f"{meta['loss_last_500']:.4f}" in card


def test_samples_a_batch(shipped, one_thread):
    model, schedule, _ = shipped
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x0 = ddim_sample(model, x_T, schedule, make_timesteps(1000, 5, "trailing"), progress=False)
    assert x0.shape == (2, 1, 28, 28) and torch.isfinite(x0).all()
