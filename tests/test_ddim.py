import numpy as np
import pytest
import torch

from conftest import GaussianEps
from course_lib.ddim import (SPACINGS, check_timesteps, ddim_invert, ddim_sample, ddim_sigma, ddim_step,
                             make_timesteps, slerp)
from course_lib.ddpm import ddpm_sample


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("S", [1, 3, 7, 10, 50, 100, 333, 999, 1000])
def test_timesteps_are_valid_pairs(spacing, S):
    pairs = make_timesteps(1000, S, spacing)
    ts = [t for t, _ in pairs]
    assert len(pairs) == S
    assert all(a > b for a, b in zip(ts, ts[1:])), "strictly descending, so no step repeats"
    assert [p for _, p in pairs] == ts[1:] + [-1], "t_prev is the next t; the last step goes to abar = 1"
    assert 0 <= min(ts) and max(ts) <= 999
    assert check_timesteps(pairs, 1000) == pairs


def test_spacings_match_their_definitions():
    assert [t for t, _ in make_timesteps(1000, 10, "leading")] == list(range(900, -1, -100))
    assert [t for t, _ in make_timesteps(1000, 10, "trailing")] == list(range(999, 0, -100))
    assert [t for t, _ in make_timesteps(1000, 10, "linspace")] == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    official = (np.linspace(0, np.sqrt(800), 10) ** 2).astype(int)  # ermongroup/ddim, skip_type="quad"
    assert [t for t, _ in make_timesteps(1000, 10, "quad")] == official[::-1].tolist()
    assert [t for t, _ in make_timesteps(1000, 1000, "quad")] == list(range(999, -1, -1))


@pytest.mark.parametrize("S", [50, 100, 200])
def test_official_quad_repeats_steps_and_ours_does_not(S):
    official = (np.linspace(0, np.sqrt(800), S) ** 2).astype(int)
    assert len(set(official.tolist())) < S, "the official quad sequence has duplicates here"
    ours = [t for t, _ in make_timesteps(1000, S, "quad")]
    assert len(set(ours)) == S
    # where the official sequence does not collide, ours keeps its values
    big = official[official >= S]
    assert set(big.tolist()) <= set(ours)


def test_sigma_eq16_and_eta1_is_beta_tilde(schedule64):
    s = schedule64
    for t, t_prev in make_timesteps(1000, 1000, "leading")[:-1]:
        sigma = ddim_sigma(s.alpha_bar[t], s.alpha_bar[t_prev], 1.0)
        assert torch.allclose(sigma**2, s.posterior_variance[t], rtol=1e-9)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_sigma_never_exceeds_its_largest_value(schedule64, spacing, eta):
    s = schedule64
    for S in [5, 20, 1000]:
        for t, t_prev in make_timesteps(1000, S, spacing):
            ab_prev = s.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
            assert ddim_sigma(s.alpha_bar[t], ab_prev, eta) <= (1 - ab_prev).sqrt() + 1e-12


def test_sigma_uses_the_pairs_alpha_bars_not_the_tables_beta(schedule64):
    """The slides' form (beta_t outside the root, and the table's beta_t) is wrong on a sub-sequence."""
    s = schedule64
    t, t_prev = 500, 400
    ab_t, ab_prev = s.alpha_bar[t], s.alpha_bar[t_prev]
    paper = ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
    slides = ((1 - ab_prev) / (1 - ab_t)).sqrt() * s.betas[t]
    table_beta = ((1 - ab_prev) / (1 - ab_t) * s.betas[t]).sqrt()
    ours = ddim_sigma(ab_t, ab_prev, 1.0)
    assert torch.allclose(ours, paper)
    assert not torch.allclose(ours, slides, rtol=0.1) and not torch.allclose(ours, table_beta, rtol=0.1)


def test_step_is_eq12(schedule64):
    s = schedule64
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(2, 5, generator=g, dtype=torch.float64) for _ in range(3))
    ab_t, ab_prev, eta = s.alpha_bar[600], s.alpha_bar[550], 0.7
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    x0_pred = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    expected = ab_prev.sqrt() * x0_pred + (1 - ab_prev - sigma**2).sqrt() * eps + sigma * z
    assert torch.allclose(ddim_step(eps, x_t, ab_t, ab_prev, eta, z), expected, rtol=1e-12)
    # the last step lands on abar = 1: x_prev is x0_pred, and no noise is added whatever eta is
    assert torch.allclose(ddim_step(eps, x_t, ab_t, 1.0, 1.0, z), x0_pred)


def test_eta1_full_sequence_is_ddpm_fixed_small(schedule, toy_eps):
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ddim = ddim_sample(toy_eps, x_T, schedule, make_timesteps(1000, 1000), eta=1.0,
                       generator=torch.Generator().manual_seed(5), progress=False)
    ddpm = ddpm_sample(toy_eps, x_T, schedule, "fixed_small", generator=torch.Generator().manual_seed(5),
                       progress=False)
    assert torch.allclose(ddim, ddpm, atol=1e-4), (ddim - ddpm).abs().max()
    other_noise = ddpm_sample(toy_eps, x_T, schedule, generator=torch.Generator().manual_seed(6), progress=False)
    assert not torch.allclose(ddim, other_noise, atol=1e-2)


def test_eta0_is_deterministic(schedule, toy_eps):
    x_T = torch.randn(2, 1, 4, 4)
    pairs = make_timesteps(1000, 20, "trailing")
    a = ddim_sample(toy_eps, x_T, schedule, pairs, generator=torch.Generator().manual_seed(0), progress=False)
    b = ddim_sample(toy_eps, x_T, schedule, pairs, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a, b)
    c = ddim_sample(toy_eps, x_T, schedule, pairs, eta=0.5, generator=torch.Generator().manual_seed(1),
                    progress=False)
    assert not torch.allclose(a, c)


def test_inversion_then_sampling_reconstructs_better_with_more_steps(schedule):
    model = GaussianEps(schedule)
    x0 = 0.5 + 0.3 * torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    errors = []
    for S in [5, 10, 50, 200]:
        pairs = make_timesteps(1000, S, "linspace")
        x_T = ddim_invert(model, x0, schedule, pairs, progress=False)
        errors.append(((ddim_sample(model, x_T, schedule, pairs, progress=False) - x0) ** 2).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4 < errors[0], errors


def test_inversion_reaches_the_prior(schedule):
    """Inverting data from N(mu, s^2) with the exact eps-model lands on (nearly) standard normal latents."""
    model = GaussianEps(schedule)
    x0 = 0.5 + 0.3 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    x_T = ddim_invert(model, x0, schedule, make_timesteps(1000, 100, "trailing"), progress=False)
    assert abs(x_T.mean().item()) < 0.05 and abs(x_T.std().item() - 1) < 0.05


def test_slerp():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(slerp(e0, e1, 0.5), torch.tensor([[0.5**0.5, 0.5**0.5]]))
    assert torch.allclose(slerp(e0, e1, 1 / 3).norm(), torch.tensor(1.0))  # stays on the circle
    assert torch.allclose(slerp(e0, 2 * e0, 0.5), 1.5 * e0)  # parallel rows fall back to lerp
    with pytest.raises(ValueError, match="alpha"):
        slerp(a, b, 1.5)
    with pytest.raises(ValueError, match="must match"):
        slerp(a, b[:, :, :2], 0.5)


def test_bad_arguments_teach(schedule, toy_eps):
    with pytest.raises(ValueError, match="num_steps=2000 must be an integer from 1 to the T=1000"):
        make_timesteps(1000, 2000)
    with pytest.raises(ValueError, match="num_steps=0"):
        make_timesteps(1000, 0)
    with pytest.raises(ValueError, match="unknown spacing 'uniform'"):
        make_timesteps(1000, 10, "uniform")
    with pytest.raises(ValueError, match="eta=-0.5"):
        ddim_sigma(0.5, 0.6, -0.5)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="needs `noise`"):
        ddim_step(x, x, 0.5, 0.6, eta=0.5)
    with pytest.raises(ValueError, match="noise has shape"):
        ddim_step(x, x, 0.5, 0.6, eta=0.5, noise=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="outside"):
        ddim_sample(toy_eps, x, schedule, [(1000, -1)], progress=False)
    with pytest.raises(ValueError, match="go down in t"):
        check_timesteps([(10, 20), (20, -1)], 1000)
    with pytest.raises(ValueError, match="last t_prev must be -1"):
        check_timesteps([(20, 10), (10, 0)], 1000)
    with pytest.raises(ValueError, match="eta=-1"):
        ddim_sample(toy_eps, x, schedule, make_timesteps(1000, 2), eta=-1, progress=False)
