"""The shipped MNIST eps-models (unconditional and class-conditional) load offline, match their model cards, and sample."""
import re
from pathlib import Path

import pytest
import torch

from course_lib import ddim_sample, load_checkpoint, make_timesteps
from course_lib.classifier import embed, load_classifier
from course_lib.guidance import guided_model
from course_lib.unet import UNet

DATA = Path(__file__).resolve().parent.parent / "course_lib" / "data"
MODELS = {"mnist_unet28": None, "mnist_cfg_unet28": 10}  # name -> num_classes


@pytest.fixture(scope="module", params=list(MODELS))
def shipped(request):
    checkpoint, card = DATA / f"{request.param}.pt", DATA / f"{request.param}.md"
    model, schedule, meta = load_checkpoint(checkpoint, expect={"model_class": "UNet"})
    assert model.num_classes == MODELS[request.param]
    return model, schedule, meta, checkpoint, card


def test_loads_as_a_unet_on_the_linear_schedule(shipped):
    model, schedule, meta, checkpoint, _ = shipped
    assert isinstance(model, UNet) and not model.training
    assert schedule.config() == {"name": "linear", "T": 1000}
    assert meta["size"] == 28 and meta["steps"] > 0
    assert checkpoint.stat().st_size < 8 * 2**20, "shipped files stay a few MB"


def test_model_card_states_what_the_checkpoint_holds(shipped):
    model, _, meta, _, card = shipped
    card = card.read_text()
    params = sum(p.numel() for p in model.parameters())
    assert re.search(rf"\| parameters \| {params:,} \|", card)
    assert re.search(rf"\| steps \| {meta['steps']:,}( from the initial weights)? \|", card)
    assert f"{meta['loss_last_500']:.4f}" in card


def test_samples_a_batch(shipped, one_thread):
    model, schedule, _, _, _ = shipped
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x0 = ddim_sample(model, x_T, schedule, make_timesteps(1000, 5, "trailing"), progress=False)
    assert x0.shape == (2, 1, 28, 28) and torch.isfinite(x0).all()


def test_conditional_model_follows_its_labels(one_thread):
    """Guided (w = 3), the conditional model's digits are read as the digit asked for far above chance (10 %); its
    'no label' half stays an unconditional model close to the one it started from (notebook 09, section 1)."""
    model, schedule, meta = load_checkpoint(DATA / "mnist_cfg_unet28.pt")
    assert meta["init_from"] == "course_lib/data/mnist_unet28.pt"
    y = torch.arange(10).repeat(2)
    x_T = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0 = ddim_sample(guided_model(model, y, 3.0), x_T, schedule, make_timesteps(1000, 10, "trailing"),
                         progress=False)
    correct = (embed(x0.clamp(-1, 1), load_classifier())[1].argmax(1) == y).sum().item()
    assert correct >= 14, f"only {correct} of 20 guided samples are read as the digit asked for"
    unconditional, _, _ = load_checkpoint(DATA / "mnist_unet28.pt")
    x_t, t = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.full((8,), 500)
    with torch.no_grad():
        eps_null = model(x_t, t, torch.full((8,), model.null_label))
        gap = ((eps_null - unconditional(x_t, t)).norm() / eps_null.norm()).item()
    assert gap < 0.2, f"the 'no label' half drifted {gap:.0%} from the unconditional model"
