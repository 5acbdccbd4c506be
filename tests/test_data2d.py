"""Numerical checks of course_lib.data2d: closed-form scores, densities, noised marginals, Tweedie."""
import math

import pytest
import torch

from course_lib.data2d import GaussianMixture, swiss_roll, two_moons

# An asymmetric 3-component mixture: unequal weights and stds catch bugs a symmetric one hides.
MEANS = [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]]
STDS = [0.3, 0.5, 0.8]
WEIGHTS = [0.5, 0.3, 0.2]


def asym():
    return GaussianMixture(MEANS, STDS, WEIGHTS)


def analytic_moments(means, stds, weights):
    """Mixture mean and covariance written out by hand, independently of the class, in float64."""
    m, s, w = (torch.tensor(v, dtype=torch.float64) for v in (means, stds, weights))
    mean = w @ m  # (D,)
    cov = sum(w[k] * (s[k] ** 2 * torch.eye(2, dtype=torch.float64) + torch.outer(m[k] - mean, m[k] - mean))
              for k in range(len(w)))
    return mean, cov


def assert_moments_match(samples, mean, cov, what, z=5.0):
    """Empirical mean/cov of samples (n, D) within z standard errors (computed from the samples) of mean/cov."""
    x = samples.double()
    n = x.shape[0]
    emp_mean = x.mean(0)
    se_mean = x.std(0) / math.sqrt(n)
    centred = x - emp_mean
    prods = centred[:, :, None] * centred[:, None, :]  # (n, D, D)
    emp_cov, se_cov = prods.mean(0), prods.std(0) / math.sqrt(n)
    assert ((emp_mean - mean).abs() < z * se_mean).all(), (
        f"{what}: sample mean {emp_mean.tolist()} is more than {z} standard errors "
        f"({se_mean.tolist()}) from the analytic mean {mean.tolist()}"
    )
    assert ((emp_cov - cov).abs() < z * se_cov).all(), (
        f"{what}: sample covariance {emp_cov.tolist()} is more than {z} standard errors "
        f"({se_cov.tolist()}) from the analytic covariance {cov.tolist()}"
    )
    return se_mean, se_cov


# ---------------------------------------------------------------- point clouds


@pytest.mark.parametrize("make", [two_moons, swiss_roll])
def test_point_cloud_shape_dtype_seed_and_scale(make):
    x = make(7)
    assert x.shape == (7, 2) and x.dtype == torch.float32
    assert torch.equal(make(100, seed=3), make(100, seed=3)), "same seed must give the same points"
    assert not torch.equal(make(100, seed=3), make(100, seed=4)), "different seeds must give different points"
    big = make(20_000)
    assert big.mean(0).abs().max() < 0.05, f"{make.__name__} is not centred: mean {big.mean(0).tolist()}"
    rms_std = big.var(0).mean().sqrt()
    assert 0.8 < rms_std < 1.2, f"{make.__name__} is not unit-ish: rms std {rms_std:.3f}"


def test_two_moons_noise_zero_lies_on_the_moons():
    x = two_moons(1000, noise=0.0) * 0.7 + torch.tensor([0.5, 0.25])  # back to sklearn's units
    upper, lower = x[0::2], x[1::2]
    assert torch.allclose(upper.norm(dim=1), torch.ones(500), atol=1e-5)
    assert torch.allclose((lower - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(500), atol=1e-5)


@pytest.mark.parametrize("make", [two_moons, swiss_roll])
@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": -3}, {"n": 2.5}, {"n": 10, "noise": -0.1}])
def test_point_cloud_bad_args(make, kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


# ---------------------------------------------------------------- Gaussian mixture: density and score


@pytest.mark.parametrize("gm", [asym(), GaussianMixture.default(), asym().noised(0.3)], ids=["asym", "default", "noised"])
def test_score_matches_autograd(gm):
    x = torch.cat([2.0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([[6.0, -5.0], [0.0, 0.0]])]).double().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-7, atol=1e-9)


def test_log_joint_is_each_components_share():
    """log_joint(x)[..., k] = log w_k + log N(x; mu_k, s_k^2 I), computed here from the Gaussian density by hand."""
    gm = asym()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    by_hand = torch.stack([math.log(w) - ((x - mu.double()) ** 2).sum(1) / (2 * s**2) - 2 * math.log(s)
                           - math.log(2 * math.pi) for mu, s, w in zip(gm.means, gm.stds.tolist(), gm.weights.tolist())], 1)
    torch.testing.assert_close(gm.log_joint(x), by_hand, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.logsumexp(gm.log_joint(x), 1), gm.log_prob(x))
    with pytest.raises(ValueError, match="expected"):
        gm.log_joint(torch.zeros(3, 3))


def test_far_from_every_mode_stays_finite_in_float32():
    gm = GaussianMixture.default()
    x = torch.tensor([[50.0, -40.0]])
    assert torch.isfinite(gm.log_prob(x)).all() and torch.isfinite(gm.score(x)).all(), (
        "log_prob/score must use logsumexp/softmax: exp(log N) underflows to 0 far from the modes"
    )


def test_log_prob_matches_torch_distributions():
    gm = asym()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.tensor(WEIGHTS)),
        torch.distributions.Independent(
            torch.distributions.Normal(torch.tensor(MEANS), torch.tensor(STDS)[:, None].expand(3, 2)), 1
        ),
    )
    x = 1.5 * torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gm.log_prob(x), reference.log_prob(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gm, half_width", [(asym(), 6.0), (GaussianMixture.default(), 3.0)], ids=["asym", "default"])
def test_log_prob_integrates_to_one(gm, half_width):
    n = 601
    u = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(u, u, indexing="xy")  # (n, n) each
    grid = torch.stack([xx, yy], dim=-1)  # (n, n, 2)
    cell = (u[1] - u[0]) ** 2
    total = (gm.log_prob(grid).exp().sum() * cell).item()
    assert abs(total - 1.0) < 1e-3, f"p(x) integrates to {total:.5f} on the grid, not 1"


def test_shapes_dtypes_and_seeding():
    gm = asym()
    x = gm.sample(5)
    assert x.shape == (5, 2) and x.dtype == torch.float32
    a = gm.sample(50, generator=torch.Generator().manual_seed(7))
    b = gm.sample(50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b), "the same generator seed must give the same samples"
    batch = torch.randn(4, 3, 2, dtype=torch.float64)
    assert gm.log_prob(batch).shape == (4, 3) and gm.log_prob(batch).dtype == torch.float64
    assert gm.score(batch).shape == (4, 3, 2) and gm.score(batch).dtype == torch.float64
    assert gm.posterior_mean_x0(batch, 0.5).shape == (4, 3, 2)
    assert gm.eps_from_score(batch, torch.tensor(0.5)).shape == (4, 3, 2)
    assert GaussianMixture.default().means.shape == (8, 2)


def test_sample_moments_match_analytic():
    gm = asym()
    mean, cov = analytic_moments(MEANS, STDS, WEIGHTS)
    torch.testing.assert_close(gm.mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gm.covariance_matrix.double(), cov, rtol=1e-6, atol=1e-6)
    x = gm.sample(200_000, generator=torch.Generator().manual_seed(0))
    se_mean, se_cov = assert_moments_match(x, mean, cov, "GaussianMixture.sample")
    # The tolerance is tight: ignoring the weights or using variances as stds is many standard errors off.
    uniform_mean, _ = analytic_moments(MEANS, STDS, [1 / 3] * 3)
    _, var_as_std_cov = analytic_moments(MEANS, [s**2 for s in STDS], WEIGHTS)
    assert ((uniform_mean - mean).abs() > 20 * se_mean).any()
    assert ((var_as_std_cov - cov).abs() > 20 * se_cov).any()


# ---------------------------------------------------------------- noisy marginals, eps*, Tweedie


def test_noised_matches_forward_process_samples():
    gm, alpha_bar = asym(), 0.4
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(200_000, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps  # DDPM eq. (4)
    noisy = gm.noised(alpha_bar)
    mean, cov = analytic_moments(MEANS, STDS, WEIGHTS)
    torch.testing.assert_close(noisy.mean.double(), math.sqrt(alpha_bar) * mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(noisy.covariance_matrix.double(),
                               alpha_bar * cov + (1 - alpha_bar) * torch.eye(2, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert_moments_match(x_t, noisy.mean.double(), noisy.covariance_matrix.double(), "noised(0.4) vs x_t samples")
    # Beyond two moments: the average log-density of forward-process samples equals that of noised's own.
    lp_forward = noisy.log_prob(x_t).double()
    lp_own = noisy.log_prob(noisy.sample(200_000, generator=g)).double()
    se = math.sqrt((lp_forward.var() + lp_own.var()).item() / 200_000)
    assert abs(lp_forward.mean() - lp_own.mean()) < 5 * se, "noised(alpha_bar) is not the law of x_t"


def test_noised_endpoints():
    gm = asym()
    same = gm.noised(1.0)
    assert torch.allclose(same.means, gm.means) and torch.allclose(same.stds, gm.stds)
    pure_noise = gm.noised(torch.tensor(0.0))
    assert torch.allclose(pure_noise.means, torch.zeros(3, 2)) and torch.allclose(pure_noise.stds, torch.ones(3))


def importance_posterior_mean(gm, x_t, alpha_bar, m=200_000, seed=0):
    """Monte-Carlo E[x0 | x_t] for points x_t (P, D): self-normalised importance sampling, prior as proposal.

    Returns the estimate (P, D) and its delta-method standard error (P, D).
    """
    x0 = gm.sample(m, generator=torch.Generator().manual_seed(seed)).double()  # (m, D)
    sq = ((x_t.double()[:, None, :] - math.sqrt(alpha_bar) * x0) ** 2).sum(-1)  # (P, m)
    w = torch.softmax(-sq / (2 * (1 - alpha_bar)), dim=1)  # (P, m) ~ q(x_t | x0_i), normalised
    estimate = w @ x0  # (P, D)
    se = torch.sqrt(torch.einsum("pm,pmd->pd", w**2, (x0 - estimate[:, None, :]) ** 2))  # (P, D)
    return estimate, se


X_T = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.5, 0.5], [0.3, -1.0]])


def test_tweedie_single_gaussian_closed_form_and_monte_carlo():
    mu, s, alpha_bar = torch.tensor([0.5, -1.0]), 0.7, 0.3
    gm = GaussianMixture(mu[None], [s])
    # x0 ~ N(mu, s^2 I), x_t | x0 ~ N(sqrt(abar) x0, (1 - abar) I): the Gaussian posterior mean.
    gain = math.sqrt(alpha_bar) * s**2 / (alpha_bar * s**2 + 1 - alpha_bar)
    exact = mu + gain * (X_T - math.sqrt(alpha_bar) * mu)
    tweedie = gm.posterior_mean_x0(X_T, alpha_bar)
    torch.testing.assert_close(tweedie, exact, rtol=1e-5, atol=1e-5)
    estimate, se = importance_posterior_mean(gm, X_T, alpha_bar)
    assert ((tweedie.double() - estimate).abs() < 5 * se).all(), (
        f"Tweedie {tweedie.tolist()} vs Monte-Carlo {estimate.tolist()} (standard errors {se.tolist()})"
    )


def test_tweedie_and_optimal_eps_for_a_mixture():
    gm, alpha_bar = asym(), 0.5
    tweedie = gm.posterior_mean_x0(X_T, alpha_bar)
    estimate, se = importance_posterior_mean(gm, X_T, alpha_bar)
    assert ((tweedie.double() - estimate).abs() < 5 * se).all(), (
        f"Tweedie {tweedie.tolist()} vs Monte-Carlo {estimate.tolist()} (standard errors {se.tolist()})"
    )
    # eps* = E[eps | x_t] = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar) = -sqrt(1 - abar) score_t(x_t)
    eps_star = gm.eps_from_score(X_T, alpha_bar)
    torch.testing.assert_close(eps_star, (X_T - math.sqrt(alpha_bar) * tweedie) / math.sqrt(1 - alpha_bar))
    torch.testing.assert_close(eps_star, -math.sqrt(1 - alpha_bar) * gm.noised(alpha_bar).score(X_T))


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "means, stds, weights",
    [
        ([0.0, 1.0], [1.0, 1.0], None),  # means not (K, D)
        (MEANS, [0.3, 0.5], WEIGHTS),  # stds shape mismatch
        (MEANS, STDS, [0.5, 0.5]),  # weights shape mismatch
        (MEANS, STDS, [0.5, 0.3, 0.3]),  # weights sum to 1.1
        (MEANS, STDS, [1.2, -0.1, -0.1]),  # negative weights
        (MEANS, [0.3, 0.0, 0.8], WEIGHTS),  # zero std
    ],
)
def test_mixture_bad_args(means, stds, weights):
    with pytest.raises(ValueError):
        GaussianMixture(means, stds, weights)


def test_mixture_bad_calls():
    gm = asym()
    with pytest.raises(ValueError, match="positive integer"):
        gm.sample(0)
    with pytest.raises(ValueError, match="expected"):
        gm.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="expected"):
        gm.score(torch.zeros(5))
    for bad in (1.5, -0.1, torch.tensor([0.5, 0.6])):
        with pytest.raises(ValueError, match="alpha_bar"):
            gm.noised(bad)
    with pytest.raises(ValueError, match="no signal"):
        gm.posterior_mean_x0(X_T, 0.0)
