"""L_simple, EMA, and the training loop: it learns, it is reproducible, and it resumes exactly."""
import importlib
import io
import math

import pytest
import torch
import torch.nn as nn

from course_lib.mlp import MLPDenoiser
from course_lib.schedules import make_schedule
from course_lib.train import EMA, decayed_lr, diffusion_loss, pick_precision, train
from course_lib.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_mixture(n=2000, seed=0):
    """(n, 2) points around the four corners (+-2, +-2), std 0.1."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
    return centers[torch.randint(0, 4, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)  # (n, 2)


def fresh_mlp(seed=0):
    torch.manual_seed(seed)
    return MLPDenoiser(hidden_dim=64)


class Oracle(nn.Module):
    """For x0 = 0, x_t = sqrt(1 - abar_t) eps, so eps = x_t / sqrt(1 - abar_t) exactly."""

    def __init__(self, schedule):
        super().__init__()
        self.alpha_bar = schedule.alpha_bar

    def forward(self, x_t, t):
        return x_t / (1 - self.alpha_bar[t]).sqrt()[:, None]  # (B, 1) broadcast over the 2 coordinates


def test_diffusion_loss_is_eps_mse():
    schedule = make_schedule("linear", 1000)
    x0 = torch.zeros(4096, 2)
    g = torch.Generator().manual_seed(0)
    perfect = diffusion_loss(Oracle(schedule), x0, schedule, g)
    assert perfect.item() < 1e-10, f"a model that recovers eps exactly must have loss 0, got {perfect.item():.3g}"
    zero = diffusion_loss(lambda x_t, t: torch.zeros_like(x_t), x0, schedule, g)
    assert zero.item() == pytest.approx(1.0, abs=0.05), "eps_pred = 0 must cost E[eps^2] = 1"
    with pytest.raises(ValueError, match="shape of x_t"):
        diffusion_loss(lambda x_t, t: x_t[:, :1], x0, schedule, g)


def test_training_reduces_loss_on_2d_mixture():
    data = gaussian_mixture()
    result = train(fresh_mlp(), data, make_schedule("linear", 1000), steps=150, lr=2e-3, progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-30:]) / 30
    assert len(result.losses) == 150
    assert last < 0.6 and last < 0.75 * first, f"loss went from {first:.3f} to {last:.3f}; the MLP did not learn"


def test_same_seed_same_losses():
    data, schedule = gaussian_mixture(), make_schedule("linear", 100)
    runs = [train(fresh_mlp(), data, schedule, steps=8, seed=seed, progress=False).losses for seed in (0, 0, 1)]
    assert runs[0] == runs[1], "two runs with seed=0 must give identical losses"
    assert runs[0] != runs[2], "seed=1 must draw different batches, t and eps"


def test_ema_matches_hand_computation():
    decay = 0.9
    model = nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    ema = EMA(model, decay)
    assert torch.equal(ema.model.weight, w0), "the average starts at the current weights"
    w1, w2 = torch.randn(2, 3), torch.randn(2, 3)
    for w in (w1, w2):
        with torch.no_grad():
            model.weight.copy_(w)
        ema.update(model)
    expected = decay * (decay * w0 + (1 - decay) * w1) + (1 - decay) * w2
    assert torch.allclose(ema.model.weight, expected, atol=1e-6), "EMA must be w <- decay * w + (1 - decay) * w_model"
    assert not ema.model.weight.requires_grad

    other = nn.Linear(3, 2)
    ema.copy_to(other)
    assert torch.equal(other.weight, ema.model.weight)
    restored = EMA(nn.Linear(3, 2), decay)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.model.weight, ema.model.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.5)


def test_train_returns_ema_model():
    result = train(fresh_mlp(), gaussian_mixture(), make_schedule("linear", 100), steps=5, ema_decay=0.5,
                   progress=False)
    assert isinstance(result.ema_model, MLPDenoiser)
    assert not torch.equal(result.ema_model.net[0].weight, result.model.net[0].weight)


def test_resume_gives_same_weights_as_one_run(tmp_path):
    data, schedule = gaussian_mixture(), make_schedule("linear", 100)
    kwargs = dict(batch_size=32, lr=1e-3, ema_decay=0.9, seed=3, progress=False)
    straight = train(fresh_mlp(), data, schedule, steps=20, **kwargs)

    path = tmp_path / "run.pt"
    first = train(fresh_mlp(), data, schedule, steps=10, checkpoint_path=path, checkpoint_every=5, **kwargs)
    assert len(first.losses) == 10
    # a differently initialised model: every weight must come from the checkpoint
    resumed = train(fresh_mlp(seed=99), data, schedule, steps=20, checkpoint_path=path, checkpoint_every=5, **kwargs)

    assert resumed.losses == straight.losses
    for name, p in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], p), f"{name} differs after resuming"
    for name, p in straight.ema_model.state_dict().items():
        assert torch.equal(resumed.ema_model.state_dict()[name], p), f"EMA {name} differs after resuming"

    with pytest.raises(ValueError, match="lr=0.001"):
        train(fresh_mlp(), data, schedule, steps=30, checkpoint_path=path, **{**kwargs, "lr": 5e-4})
    with pytest.raises(ValueError, match="hidden_dim=64"):
        train(MLPDenoiser(hidden_dim=32), data, schedule, steps=30, checkpoint_path=path, **kwargs)


def test_decayed_lr_is_a_half_cosine():
    assert decayed_lr(1.0, 0, 10, 20) == 1.0 and decayed_lr(1.0, 10, 10, 20) == 1.0
    assert decayed_lr(1.0, 15, 10, 20) == pytest.approx(0.5) and decayed_lr(1.0, 20, 10, 20) == pytest.approx(0.0)
    assert decayed_lr(2.0, 25, 10, 20) == pytest.approx(0.0)
    assert decayed_lr(1.0, 12, 10, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


def test_lr_decay_resumes_like_one_run_and_may_follow_a_constant_lr(tmp_path):
    data, schedule = gaussian_mixture(), make_schedule("linear", 100)
    kwargs = dict(batch_size=32, lr=1e-3, ema_decay=0.9, seed=3, progress=False)
    straight = train(fresh_mlp(), data, schedule, steps=20, lr_decay=(5, 20), **kwargs)
    constant = train(fresh_mlp(), data, schedule, steps=20, **kwargs)
    assert straight.losses[:6] == constant.losses[:6] and straight.losses[6:] != constant.losses[6:]

    path = tmp_path / "run.pt"
    train(fresh_mlp(), data, schedule, steps=5, checkpoint_path=path, **kwargs)  # constant lr so far
    resumed = train(fresh_mlp(seed=99), data, schedule, steps=20, checkpoint_path=path, lr_decay=(5, 20), **kwargs)
    assert resumed.losses == straight.losses
    with pytest.raises(ValueError, match="lr_decay"):  # once decayed, a resume must keep the same decay
        train(fresh_mlp(), data, schedule, steps=30, checkpoint_path=path, **kwargs)
    with pytest.raises(ValueError, match="lr_decay must be"):
        train(fresh_mlp(), data, schedule, steps=30, lr_decay=(20, 5), **kwargs)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precisions_train_with_finite_losses(precision):
    """bf16 autocasts only the forward: weights stay float32 and the losses are finite in both precisions."""
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    images = torch.rand(16, 1, 8, 8) * 2 - 1  # (16, 1, 8, 8) in [-1, 1]
    result = train(model, images, make_schedule("linear", 100), steps=3, batch_size=4, ema_decay=0.9,
                   device="cpu", progress=False, precision=precision)
    assert result.precision == precision
    assert len(result.losses) == 3 and all(math.isfinite(loss) for loss in result.losses), result.losses
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert pick_precision("auto", torch.device("cpu"), gaussian_mixture()) == "fp32", "2-D points train in fp32"
    with pytest.raises(ValueError, match="precision"):
        train(fresh_mlp(), gaussian_mixture(), make_schedule("linear", 100), steps=1, precision="fp16", progress=False)


@pytest.mark.parametrize("capability, flags, expected", [
    ("AVX2", "fpu avx avx2", "fp32"),                      # AVX2 AMD EPYC: bf16 measured 9x slower than fp32
    ("AVX512", "fpu avx2 avx512f", "fp32"),                # AVX-512 without native bf16
    ("AVX512", "fpu avx2 avx512f avx512_bf16", "bf16"),
    ("AVX512", "fpu avx2 avx512f amx_bf16 amx_tile", "bf16"),  # AMX Xeon: bf16 measured 2.2x faster
    ("AVX2", "fpu avx2 amx_bf16", "fp32"),                 # flags without the AVX-512 kernels torch would use
])
def test_auto_precision_picks_bf16_only_where_the_cpu_has_it(monkeypatch, capability, flags, expected):
    """precision="auto" on a CPU follows the CPU's capability and /proc/cpuinfo flags (faked here), for images only."""
    train_module = importlib.import_module("course_lib.train")  # the module: course_lib.train is also a function
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(train_module.sys, "platform", "linux")
    monkeypatch.setattr(train_module, "open", lambda *a, **k: io.StringIO(f"flags\t\t: {flags}\n"), raising=False)
    images = torch.zeros(4, 1, 8, 8)
    assert pick_precision("auto", torch.device("cpu"), images) == expected
    assert pick_precision("auto", torch.device("cpu"), gaussian_mixture()) == "fp32", "2-D points train in fp32"
    assert pick_precision("fp32", torch.device("cpu"), images) == "fp32", "an explicit choice is kept"
