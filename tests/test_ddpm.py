import pytest
import torch

from course_lib.ddpm import ddpm_sample, ddpm_step, posterior_mean, posterior_variance, predict_x0
from course_lib.forward import add_noise


@pytest.mark.parametrize("t", [1, 10, 400, 999])
def test_posterior_is_gaussian_conditioning(schedule64, t):
    """q(x_{t-1} | x_t, x_0) from DDPM eq. (7) equals conditioning the joint Gaussian of (x_{t-1}, x_t)."""
    s = schedule64
    x0, x_t = torch.tensor([0.8, -0.3], dtype=torch.float64), torch.tensor([0.1, 1.2], dtype=torch.float64)
    ab_prev, ab_t, alpha_t = s.alpha_bar[t - 1], s.alpha_bar[t], s.alphas[t]
    var_prev, var_t = 1 - ab_prev, 1 - ab_t
    cov = alpha_t.sqrt() * var_prev  # Cov(x_{t-1}, x_t | x_0), from x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
    mean = ab_prev.sqrt() * x0 + cov / var_t * (x_t - ab_t.sqrt() * x0)
    var = var_prev - cov**2 / var_t
    assert torch.allclose(posterior_mean(x0, x_t, t, s), mean, rtol=1e-10)
    assert torch.allclose(posterior_variance(t, s), var, rtol=1e-10)
    assert torch.allclose(posterior_variance(t, s, "fixed_large"), s.betas[t])


def test_mean_equals_eq11_without_clipping(schedule64):
    s = schedule64
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    for t in [0, 5, 700]:
        eq11 = (x_t - s.betas[t] / (1 - s.alpha_bar[t]).sqrt() * eps) / s.alphas[t].sqrt()
        got = ddpm_step(eps, x_t, t, s, noise=torch.zeros_like(x_t))
        assert torch.allclose(got, eq11, rtol=1e-10, atol=1e-12)


def test_predict_x0_inverts_add_noise(schedule):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    t = torch.tensor([30, 30])
    x_t = add_noise(x0, t, eps, schedule)
    assert torch.allclose(predict_x0(eps, x_t, schedule.alpha_bar[30]), x0, atol=1e-5)


def test_step_noise_rules(schedule, toy_eps):
    x = torch.randn(2, 3)
    eps = toy_eps(x, torch.tensor([0, 0]))
    assert torch.equal(ddpm_step(eps, x, 0, schedule), ddpm_step(eps, x, 0, schedule, noise=torch.randn(2, 3)))
    with pytest.raises(ValueError, match="needs `noise`"):
        ddpm_step(eps, x, 5, schedule)
    with pytest.raises(ValueError, match="noise has shape"):
        ddpm_step(eps, x, 5, schedule, noise=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown variance 'learned'"):
        ddpm_step(eps, x, 5, schedule, variance="learned", noise=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="outside"):
        ddpm_step(eps, x, 1000, schedule, noise=torch.zeros(2, 3))


def test_clipping_only_when_asked(schedule):
    x_t = torch.full((1, 4), 3.0)
    eps = torch.full((1, 4), -2.0)  # x0_pred far outside [-1, 1]
    free = ddpm_step(eps, x_t, 10, schedule, noise=torch.zeros(1, 4))
    clipped = ddpm_step(eps, x_t, 10, schedule, noise=torch.zeros(1, 4), clip_x0=True)
    assert not torch.allclose(free, clipped)
    expected = posterior_mean(torch.ones(1, 4), x_t, 10, schedule)
    assert torch.allclose(clipped, expected)


def test_sampler_is_seeded_and_returns_trajectory(schedule, toy_eps):
    x_T = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    a = ddpm_sample(toy_eps, x_T, schedule, generator=torch.Generator().manual_seed(1), progress=False)
    b, traj = ddpm_sample(toy_eps, x_T, schedule, generator=torch.Generator().manual_seed(1), progress=False,
                          return_trajectory=True)
    c = ddpm_sample(toy_eps, x_T, schedule, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert len(traj) == 1001 and torch.equal(traj[0], x_T) and torch.equal(traj[-1], a)
