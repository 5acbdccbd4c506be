import pytest
import torch

from course_lib.forward import add_noise, forward_chain, forward_step


def test_add_noise_formula(schedule):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = add_noise(x0, t, noise, schedule)
    for i, ti in enumerate(t.tolist()):
        ab = schedule.alpha_bar[ti]
        assert torch.allclose(x_t[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * noise[i])


def moments_agree(samples, mean, var, z=5.0):
    """True when the sample mean and variance are within z standard errors of (mean, var)."""
    n = samples.shape[0]
    se_mean = (var / n) ** 0.5
    se_var = var * (2 / (n - 1)) ** 0.5  # standard error of a Gaussian sample variance
    m, v = samples.mean(0), samples.var(0)
    return bool(((m - mean).abs() < z * se_mean).all() and ((v - var).abs() < z * se_var).all())


@pytest.mark.parametrize("t", [0, 50, 300])
def test_chain_and_closed_form_give_the_same_marginal(schedule, t):
    """q(x_t | x_0) by one jump and by t + 1 single steps: mean sqrt(abar_t) x0, variance 1 - abar_t."""
    s = schedule.to(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    n = 40_000
    x0 = torch.tensor([1.5, -0.7], dtype=torch.float64).expand(n, 2)
    ab = s.alpha_bar[t]
    mean, var = ab.sqrt() * x0[0], 1 - ab
    chained = forward_chain(x0, t, s, generator=g)
    jumped = add_noise(x0, torch.full((n,), t), torch.randn(n, 2, generator=g, dtype=torch.float64), s)
    assert moments_agree(chained, mean, var)
    assert moments_agree(jumped, mean, var)


def test_the_moment_check_rejects_a_wrong_chain(schedule):
    """Negative control: a chain that adds beta_t (not sqrt(beta_t)) noise must fail the same check."""
    s = schedule.to(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    n, t = 40_000, 300
    x = torch.full((n, 2), 1.0, dtype=torch.float64)
    for k in range(t + 1):
        x = s.alphas[k].sqrt() * x + s.betas[k] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    ab = s.alpha_bar[t]
    assert not moments_agree(x, ab.sqrt(), 1 - ab)


def test_forward_step_is_eq2(schedule):
    x, z = torch.ones(3, 2), torch.randn(3, 2)
    assert torch.allclose(forward_step(x, 7, z, schedule), schedule.alphas[7].sqrt() * x + schedule.betas[7].sqrt() * z)


def test_bad_inputs(schedule):
    x0 = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="noise has shape"):
        add_noise(x0, torch.tensor([1, 2]), torch.zeros(2, 1, 4, 5), schedule)
    with pytest.raises(ValueError, match="outside"):
        add_noise(x0, torch.tensor([1, 1000]), torch.zeros_like(x0), schedule)
    with pytest.raises(ValueError, match="integer timesteps"):
        add_noise(x0, torch.tensor([1.0, 2.0]), torch.zeros_like(x0), schedule)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        add_noise(x0, torch.tensor([1, 2, 3]), torch.zeros_like(x0), schedule)
