import math

import pytest
import torch

from course_lib.schedules import check_timestep, cosine_betas, linear_betas, make_schedule


def test_linear_schedule_is_ddpms():
    s = make_schedule("linear", T=1000, dtype=torch.float64)
    assert s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_derived_quantities(name):
    s = make_schedule(name, T=1000, dtype=torch.float64)
    assert torch.allclose(s.alphas, 1 - s.betas)
    # alpha_bar is the running product, checked with an explicit loop
    running, expected = 1.0, []
    for a in s.alphas.tolist():
        running *= a
        expected.append(running)
    assert torch.allclose(s.alpha_bar, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    assert s.alpha_bar_prev[0] == 1.0 and torch.equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    beta_tilde = (1 - s.alpha_bar_prev) / (1 - s.alpha_bar) * s.betas
    assert torch.allclose(s.posterior_variance, beta_tilde)
    assert s.posterior_variance[0] == 0.0
    assert torch.allclose(s.posterior_mean_coef_x0, s.alpha_bar_prev.sqrt() * s.betas / (1 - s.alpha_bar))
    assert torch.allclose(s.posterior_mean_coef_xt, s.alphas.sqrt() * (1 - s.alpha_bar_prev) / (1 - s.alpha_bar))
    assert s.posterior_mean_coef_x0[0].item() == pytest.approx(1.0, abs=1e-12), "the mean at t = 0 is x0 itself"
    assert s.posterior_mean_coef_xt[0] == 0.0
    assert torch.allclose(s.snr, s.alpha_bar / (1 - s.alpha_bar))
    assert (s.alpha_bar.diff() < 0).all(), "alpha_bar must decrease"


def test_cosine_follows_nichol_dhariwal_and_is_clipped():
    T, s_off = 1000, 0.008
    betas = cosine_betas(T)

    def abar(t):
        f = lambda u: math.cos((u / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
        return f(t) / f(0)

    # before the clip, alpha_bar_t (0-based, after step t) equals abar(t + 1) of the continuous form
    alpha_bar = torch.cumprod(1 - betas, 0)
    for t in [0, 10, 500, 900]:
        assert alpha_bar[t].item() == pytest.approx(abar(t + 1), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)
    assert betas[-1].item() == pytest.approx(0.999), "the last beta is clipped at 0.999"


def test_to_moves_every_tensor():
    s = make_schedule("cosine", T=50).to(dtype=torch.float64)
    assert all(getattr(s, k).dtype == torch.float64 for k in ["betas", "alpha_bar", "posterior_variance", "snr"])
    assert s.config() == {"name": "cosine", "T": 50}
    assert make_schedule(**s.config()).T == 50


def test_float32_schedule_is_float64_rounded():
    s32, s64 = make_schedule("linear"), make_schedule("linear", dtype=torch.float64)
    assert s32.dtype == torch.float32
    assert torch.equal(s32.alpha_bar, s64.alpha_bar.float())


def test_bad_arguments_teach():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("linear", T=0)
    with pytest.raises(ValueError, match=r"t=1000 is outside \[0, 1000\)"):
        check_timestep(1000, 1000)
    with pytest.raises(ValueError, match="t=-1"):
        check_timestep(torch.tensor([3, -1]), 1000)
    assert linear_betas(10).shape == (10,)


def test_contract_edges_both_ways():
    """T = 1 is a valid schedule (one step, betas = [beta_start]); T = 0 is not (make_schedule says so)."""
    assert torch.equal(linear_betas(1, 3e-4, 0.02), torch.tensor([3e-4], dtype=torch.float64))
    s = make_schedule("linear", T=1, dtype=torch.float64)
    assert s.T == 1 and s.alpha_bar.item() == pytest.approx(1 - 1e-4) and s.posterior_variance.item() == 0.0
    assert cosine_betas(1).shape == (1,) and cosine_betas(1).item() <= 0.999
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("cosine", T=0)
