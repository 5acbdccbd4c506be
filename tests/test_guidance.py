"""Classifier-free guidance: the conditional UNet's contract, label dropout in training, and the guidance formula
checked against Bayes' rule on a labelled 2-D Gaussian mixture whose scores are exact."""
import math

import pytest
import torch

from course_lib.checkpoints import load_checkpoint, save_checkpoint
from course_lib.data2d import GaussianMixture
from course_lib.ddim import ddim_sample, make_timesteps
from course_lib.dpm_solver import dpm_solver_sample
from course_lib.guidance import guided_eps, guided_model
from course_lib.schedules import make_schedule
from course_lib.train import diffusion_loss, train
from course_lib.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn=False)


def labelled_mixture():
    """8 Gaussians (std 0.25, so neighbours overlap) on a circle of radius 1.4; class c = components 2c and 2c + 1."""
    mixture = GaussianMixture(GaussianMixture.default().means, 0.25)
    classes = [GaussianMixture(mixture.means[2 * c:2 * c + 2], mixture.stds[2 * c:2 * c + 2]) for c in range(4)]
    return mixture, classes


def log_class_posterior(mixture, x, c):
    """log p(c | x) of the labelled mixture: class c's two components' share of the joint, (...)."""
    log_joint = mixture.log_joint(x)  # (..., 8)
    return torch.logsumexp(log_joint[..., 2 * c:2 * c + 2], -1) - torch.logsumexp(log_joint, -1)


@pytest.mark.parametrize("alpha_bar", [0.9, 0.3, 0.02])
def test_bayes_rule_on_scores_gives_the_guidance_formula(alpha_bar):
    """grad log p_t(x | c) = grad log p_t(x) + grad log p_t(c | x), exactly; and eps_uncond + w (eps_cond - eps_uncond)
    equals -sqrt(1 - abar) (grad log p_t(x) + w grad log p_t(c | x)) for every w, with p_t(c | x) from autograd."""
    mixture, classes = labelled_mixture()
    x_t = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    noised = mixture.noised(alpha_bar)
    for c in range(4):
        x = x_t.clone().requires_grad_(True)
        grad_log_posterior, = torch.autograd.grad(log_class_posterior(noised, x, c).sum(), x)
        score_cond = classes[c].noised(alpha_bar).score(x_t)
        torch.testing.assert_close(score_cond, noised.score(x_t) + grad_log_posterior, atol=1e-9, rtol=1e-9)
        eps_cond, eps_uncond = classes[c].eps_from_score(x_t, alpha_bar), mixture.eps_from_score(x_t, alpha_bar)
        for w in (0.0, 1.0, 2.5, 7.0):
            by_bayes = -math.sqrt(1 - alpha_bar) * (noised.score(x_t) + w * grad_log_posterior)
            torch.testing.assert_close(guided_eps(eps_cond, eps_uncond, w), by_bayes, atol=1e-9, rtol=1e-9)


class MixtureEps(torch.nn.Module):
    """The exact conditional eps-model of the labelled mixture: model(x_t, t, y), y = 4 meaning "no label"."""

    num_classes, null_label = 4, 4

    def __init__(self, schedule):
        super().__init__()
        self.alpha_bar = schedule.alpha_bar
        self.mixture, self.classes = labelled_mixture()

    def forward(self, x_t, t, y):  # one t per batch (as the samplers pass it), a label per row
        alpha_bar = float(self.alpha_bar[t[0]])
        eps = self.mixture.eps_from_score(x_t, alpha_bar)
        for c, source in enumerate(self.classes):
            eps = torch.where((y == c)[:, None], source.eps_from_score(x_t, alpha_bar), eps)
        return eps


def test_guided_sampling_takes_the_class_and_pushes_away_from_the_others():
    """With the exact eps (what notebook 09 shows): w = 0 ignores the label (about 1/4 of the samples in each class),
    w = 1 samples the class (its mean radius as the class's own samples'), w = 4 samples the class too but pushed
    outward, away from the other classes, past the class's modes; DDIM and DPM-Solver++ take the same guided model."""
    schedule = make_schedule("linear", T=1000, dtype=torch.float64)
    model = MixtureEps(schedule)
    mixture, classes = labelled_mixture()
    y = torch.full((400,), 1, dtype=torch.long)
    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def share_and_radius(x0):
        return (mixture.log_joint(x0).argmax(-1) // 2 == 1).double().mean().item(), x0.norm(dim=1).mean().item()

    timesteps = make_timesteps(1000, 100, "trailing")
    out = {w: share_and_radius(dpm_solver_sample(guided_model(model, y, w), x_T, schedule, timesteps, progress=False))
           for w in (0.0, 1.0, 4.0)}
    own_radius = classes[1].sample(20000, generator=torch.Generator().manual_seed(2)).norm(dim=1).mean().item()
    assert 0.15 < out[0.0][0] < 0.35, f"w = 0 must ignore the label: {out}"
    assert out[1.0][0] > 0.95 and out[4.0][0] > 0.99, f"w >= 1 must sample class 1: {out}"
    assert abs(out[1.0][1] - own_radius) < 0.05, f"w = 1 samples the class itself: {out}, class radius {own_radius}"
    assert out[4.0][1] > own_radius + 0.3, f"w = 4 pushes outward, away from the other classes: {out}"
    x_ddim = ddim_sample(guided_model(model, y, 4.0), x_T, schedule, make_timesteps(1000, 50, "trailing"),
                         progress=False)
    assert share_and_radius(x_ddim)[0] > 0.99


def test_guided_model_runs_one_batched_forward_and_matches_the_formula():
    torch.manual_seed(0)
    model = UNet(**TINY, num_classes=3).eval()
    x_t, t, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 10, 200, 500, 999]), torch.tensor([0, 1, 2, 1, 0])
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        eps_cond, eps_uncond = model(x_t, t, y), model(x_t, t, torch.full((5,), 3))
        calls.clear()
        guided = guided_model(model, y, 2.5)(x_t, t)
    assert calls == [10], "one forward on the 2B rows, not two calls"
    torch.testing.assert_close(guided, eps_uncond + 2.5 * (eps_cond - eps_uncond), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(guided_model(model, y, 0.0)(x_t, t), eps_uncond)
        torch.testing.assert_close(guided_model(model, y, 1.0)(x_t, t), eps_cond)
    assert not torch.allclose(eps_cond, eps_uncond), "the label must change the output"


def test_guided_model_teaching_errors():
    model = UNet(**TINY, num_classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        guided_model(UNet(**TINY), torch.tensor([0]), 2.0)
    with pytest.raises(ValueError, match="0..2"):
        guided_model(model, torch.tensor([3]), 2.0)  # the null label is added by guided_model itself
    with pytest.raises(ValueError, match="w=-1.0"):
        guided_model(model, torch.tensor([0]), -1.0)
    with pytest.raises(ValueError, match="one label per sample"):
        guided_model(model, torch.tensor([0, 1]), 2.0)(torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3]))


def test_conditional_unet_contract():
    torch.manual_seed(0)
    plain = UNet(**TINY)
    model = UNet(**TINY, num_classes=10)
    assert model.null_label == 10 and model.config()["num_classes"] == 10
    assert "num_classes" not in plain.config(), "unconditional checkpoints keep their old config"
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["label_emb.weight"] and not unexpected
    x_t, t = torch.randn(3, 1, 16, 16), torch.tensor([1, 500, 999])
    with torch.no_grad():  # the "no label" row starts at zero: warm-started, it is the unconditional model
        for y in (None, torch.full((3,), 10)):
            torch.testing.assert_close(model(x_t, t, y), plain(x_t, t))
        assert not torch.allclose(model(x_t, t, torch.tensor([0, 5, 9])), plain(x_t, t)), "class rows start random"
    with pytest.raises(ValueError, match="unconditional"):
        plain(x_t, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="LongTensor"):
        model(x_t, t, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="0..9"):
        model(x_t, t, torch.tensor([0, 11, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        UNet(**TINY, num_classes=0)
    with pytest.raises(ValueError, match="no labels"):
        plain.null_label


def test_conditional_checkpoint_round_trip(tmp_path):
    model = UNet(**TINY, num_classes=4)
    save_checkpoint(tmp_path / "c.pt", model, make_schedule("linear", T=100))
    loaded, _, _ = load_checkpoint(tmp_path / "c.pt", expect={"num_classes": 4})
    x_t, t, y = torch.randn(2, 1, 16, 16), torch.tensor([3, 50]), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x_t, t, y), model.eval()(x_t, t, y))


def test_label_dropout_trains_both_halves():
    """train(labels=...) calls model(x_t, t, y) with about p_uncond of the labels replaced by the null label,
    the same draws for the same seed; an unconditional model refuses labels."""
    seen = []

    class Recorder(UNet):
        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return super().forward(x, t, y)

    torch.manual_seed(0)
    data, labels = torch.randn(64, 1, 16, 16), torch.arange(64) % 3
    train(Recorder(**TINY, num_classes=3), data, make_schedule("linear", T=100), 20, batch_size=50,
          labels=labels, p_uncond=0.3, progress=False, precision="fp32")
    y = torch.cat(seen)
    share_null = (y == 3).float().mean().item()
    assert 0.2 < share_null < 0.4, f"about 30 % of labels must be dropped, got {share_null:.2f}"
    assert set(y.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="unconditional"):
        train(UNet(**TINY), data, make_schedule("linear", T=100), 1, labels=labels, progress=False)
    with pytest.raises(ValueError, match="p_uncond"):
        train(UNet(**TINY, num_classes=3), data, make_schedule("linear", T=100), 1, labels=labels, p_uncond=1.0,
              progress=False)
    loss = diffusion_loss(UNet(**TINY, num_classes=3), data[:4], make_schedule("linear", T=100),
                          torch.Generator().manual_seed(0), y=torch.tensor([0, 1, 2, 3]))
    assert loss.ndim == 0 and torch.isfinite(loss)
