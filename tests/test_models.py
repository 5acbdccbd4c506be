"""Shapes, contract and gradients of the denoisers eps_theta(x_t, t): UNet (images) and MLPDenoiser (2-D points)."""
import math

import pytest
import torch

from course_lib.device import pick_device
from course_lib.mlp import MLPDenoiser
from course_lib.unet import UNet, timestep_embedding

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_timestep_embedding_values():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4)), "t=0 must embed as sin(0)=0, cos(0)=1"
    # frequency i is 10000^(-i/4); entry [1, 1] is sin(1 * 10000^(-1/4))
    assert emb[1, 1].item() == pytest.approx(math.sin(10000 ** -0.25), abs=1e-6)
    assert emb[2, 4].item() == pytest.approx(math.cos(999.0), abs=1e-4)
    with pytest.raises(ValueError, match="even dim"):
        timestep_embedding(t, 7)


def test_default_unet_parameter_count():
    n = count_params(UNet())
    print(f"default UNet: {n:,} parameters")
    assert 0.5e6 <= n <= 2e6, f"default UNet has {n:,} parameters; the course wants 0.5 M to 2 M"


@pytest.mark.parametrize("size", [16, 28, 32])
def test_unet_output_shape(size):
    torch.manual_seed(0)
    model = UNet()
    x_t = torch.randn(2, 1, size, size)
    t = torch.tensor([0, T - 1])
    assert model(x_t, t).shape == (2, 1, size, size)


def test_unet_odd_resolution_and_channels():
    """With 4 levels a 28x28 input reaches 7x7, then 4x4; upsampling must come back to 7, 14, 28."""
    model = UNet(in_channels=3, base_channels=8, channel_mults=(1, 2, 2, 2), num_res_blocks=1)
    x_t = torch.randn(2, 3, 28, 28)
    assert model(x_t, torch.tensor([5, 500])).shape == (2, 3, 28, 28)


def test_unet_config_rebuilds_same_architecture():
    model = UNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attn=False)
    rebuilt = UNet(**model.config())
    assert rebuilt.config() == model.config()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert not any("attn" in k for k in shapes), "attn=False must build no attention layer"


def test_unet_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = UNet()
    x_t = torch.randn(2, 1, 16, 16)
    model(x_t, torch.tensor([3, 700])).pow(2).mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient reaches {dead}"


def test_unet_deterministic_in_eval_and_uses_t():
    torch.manual_seed(0)
    model = UNet(base_channels=16).eval()
    x_t = torch.randn(3, 1, 16, 16)
    t = torch.tensor([1, 2, 3])
    with torch.no_grad():
        first, second = model(x_t, t), model(x_t, t)
        other_t = model(x_t, t + 500)
    assert torch.equal(first, second), "two eval calls on the same input must agree exactly"
    assert not torch.allclose(first, other_t), "the output must depend on t (time embedding unused?)"


@pytest.mark.parametrize("model, x_t", [(UNet(base_channels=8, channel_mults=(1, 2)), torch.randn(2, 1, 16, 16)),
                                        (MLPDenoiser(), torch.randn(2, 2))])
def test_models_reject_bad_t(model, x_t):
    with pytest.raises(ValueError, match="not t / T"):
        model(x_t, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        model(x_t, torch.tensor(5))
    with pytest.raises(ValueError, match="expects x_t of shape"):
        model(x_t[:, 0], torch.tensor([1, 2]))  # channel axis dropped


def test_models_run_on_picked_device():
    device = pick_device()
    for model, x_t in [(UNet(base_channels=8), torch.randn(2, 1, 16, 16)), (MLPDenoiser(), torch.randn(2, 2))]:
        model = model.to(device)
        out = model(x_t.to(device), torch.tensor([1, 2], device=device))
        assert out.device.type == device.type and out.shape == x_t.shape


def test_mlp_shape_config_and_gradients():
    torch.manual_seed(0)
    model = MLPDenoiser(hidden_dim=64, num_layers=2)
    print(f"MLPDenoiser(hidden_dim=64, num_layers=2): {count_params(model):,} parameters")
    x_t = torch.randn(16, 2)
    t = torch.randint(0, T, (16,))
    out = model(x_t, t)
    assert out.shape == (16, 2)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert MLPDenoiser(**model.config()).config() == model.config()
    assert count_params(MLPDenoiser()) < 100_000, "the 2-D model must stay small enough to train in seconds"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x_t, t), model(x_t, t))
        assert not torch.allclose(model(x_t, t), model(x_t, (t + 300) % T))
