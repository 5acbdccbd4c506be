"""2-D toy data sets for diffusion experiments, as float32 tensors of shape (N, 2).

`two_moons` and `swiss_roll` are point clouds: shifted and scaled by fixed constants so they are
roughly centred with std about 1 (unit-ish), the scale DDPM's N(0, I) noise expects.
`GaussianMixture` is the one data set whose density is known exactly: its log p(x), its score
grad_x log p(x), and, through `noised`, the exact score of every noisy marginal q(x_t). That makes it
the ground truth for Tweedie's formula, the optimal eps-prediction and annealed Langevin dynamics.
"""
import math
import numbers

import torch


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of points")


def _check_noise(noise):
    if not noise >= 0:
        raise ValueError(f"noise={noise!r} must be >= 0: it is the std of the Gaussian noise added to each point")


def two_moons(n, noise=0.05, seed=0):
    """Two interleaving half circles (like sklearn's make_moons), (n, 2) float32.

    `noise` is the std of the Gaussian noise added in sklearn's units, before rescaling; the cloud
    is then shifted by its exact mean (0.5, 0.25) and divided by 0.7, the rms std of the noiseless
    moons, keeping the shape: std ~1.24 along x and ~0.71 along y. Points alternate between the
    two moons, so any x[:m] is balanced.
    """
    _check_n(n)
    _check_noise(noise)
    g = torch.Generator().manual_seed(seed)
    angle = math.pi * torch.rand(n, generator=g, dtype=torch.float64)  # (n,) uniform on [0, pi]
    upper = torch.arange(n) % 2 == 0  # (n,) alternate moons
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], dim=1)  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    points = (points - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 0.7
    return points.float()


def swiss_roll(n, noise=0.5, seed=0):
    """The 2-D Swiss roll: the (x, z) projection of sklearn's make_swiss_roll, (n, 2) float32.

    The spiral is (t cos t, t sin t) with t uniform on [1.5 pi, 4.5 pi]. `noise` is the std of the
    Gaussian noise added in those units (arms are 2 pi apart); the cloud is then shifted by its exact
    mean (2, 2 / (3 pi)) ~ (2.0, 0.21) and divided by 6.8, its rms std, so each coordinate has std ~1.
    """
    _check_n(n)
    _check_noise(noise)
    g = torch.Generator().manual_seed(seed)
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g, dtype=torch.float64))  # (n,)
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    points = (points - torch.tensor([2.0, 2.0 / (3.0 * math.pi)], dtype=torch.float64)) / 6.8
    return points.float()


def _check_alpha_bar(alpha_bar, allow_zero=True):
    """alpha_bar as a Python float, checked to lie in [0, 1] (or (0, 1])."""
    if torch.is_tensor(alpha_bar):
        if alpha_bar.numel() != 1:
            raise ValueError(
                f"alpha_bar has shape {tuple(alpha_bar.shape)}; pass one value, e.g. schedule.alpha_bar[t] for an int t"
            )
        alpha_bar = alpha_bar.item()
    alpha_bar = float(alpha_bar)
    if not 0.0 <= alpha_bar <= 1.0:
        raise ValueError(f"alpha_bar={alpha_bar} must lie in [0, 1]: it is abar_t = prod_(s<=t) alpha_s")
    if not allow_zero and alpha_bar == 0.0:
        raise ValueError("alpha_bar=0 leaves no signal in x_t: x0 cannot be recovered by dividing by sqrt(alpha_bar)")
    return alpha_bar


class GaussianMixture:
    """p(x) = sum_k weights[k] * N(x; means[k], stds[k]^2 I), an isotropic Gaussian mixture.

    means: (K, D) with D = 2 for the course's plots; stds: (K,) or one float shared by all
    components; weights: (K,), >= 0 and summing to 1 (None: uniform). Stored as float32; `log_prob`,
    `score` and friends compute in the dtype and on the device of their input x.
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float32)
        if means.ndim != 2:
            raise ValueError(f"means has shape {tuple(means.shape)}; expected (K, D), one row per component")
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float32)
        if stds.ndim == 0:
            stds = stds.expand(K).clone()  # (K,) one shared std
        if stds.shape != (K,):
            raise ValueError(f"stds has shape {tuple(stds.shape)}; expected ({K},), one std per component of means")
        if not (stds > 0).all():
            raise ValueError(f"stds must be > 0, got {stds.tolist()}")
        weights = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (K,):
            raise ValueError(f"weights has shape {tuple(weights.shape)}; expected ({K},), one weight per component")
        if (weights < 0).any():
            raise ValueError(f"weights must be >= 0, got {weights.tolist()}")
        if abs(weights.sum().item() - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1, but sum to {weights.sum().item():.6g}")
        self.means, self.stds, self.weights = means, stds, weights

    @classmethod
    def default(cls):
        """8 Gaussians (std 0.1) evenly spaced on a circle of radius 1.4: mean 0, per-coordinate std ~1."""
        angles = torch.arange(8) * (2 * math.pi / 8)  # (8,)
        means = 1.4 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (8, 2)
        return cls(means, 0.1)

    @property
    def dim(self):
        """D, the dimension of each point."""
        return self.means.shape[1]

    @property
    def mean(self):
        """E[x] = sum_k w_k mu_k, (D,)."""
        return self.weights @ self.means

    @property
    def covariance_matrix(self):
        """Cov[x] = sum_k w_k (s_k^2 I + mu_k mu_k^T) - E[x] E[x]^T, (D, D)."""
        second_moment = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)  # (D, D)
        second_moment = second_moment + (self.weights @ self.stds**2) * torch.eye(self.dim)
        return second_moment - torch.outer(self.mean, self.mean)

    def __repr__(self):
        return f"GaussianMixture(K={self.means.shape[0]}, dim={self.dim})"

    def sample(self, n, generator=None):
        """n samples, (n, D) float32: pick component k with probability w_k, then x = mu_k + s_k * z."""
        _check_n(n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator)  # (n, D)
        return self.means[k] + self.stds[k, None] * z  # (n, D)

    def _check_x(self, x):
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.float()
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (..., {self.dim}), points of dimension {self.dim}")
        return x

    def _log_joint(self, x):
        """log w_k + log N(x; mu_k, s_k^2 I) for every component, (..., K)."""
        means, stds, weights = self.means.to(x), self.stds.to(x), self.weights.to(x)
        sq_dist = ((x[..., None, :] - means) ** 2).sum(-1)  # (..., K)
        log_normal = -0.5 * sq_dist / stds**2 - self.dim * torch.log(stds) - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.log(weights) + log_normal  # (..., K)

    def log_joint(self, x):
        """log w_k + log N(x; mu_k, s_k^2 I), the log of each component's share of p(x), (..., D) -> (..., K).

        A softmax over the last axis gives the responsibilities p(k | x); a logsumexp gives log p(x).
        """
        return self._log_joint(self._check_x(x))

    def log_prob(self, x):
        """log p(x) for x of shape (..., D), returns (...); logsumexp over components keeps it finite far away."""
        x = self._check_x(x)
        return torch.logsumexp(self._log_joint(x), dim=-1)

    def score(self, x):
        """grad_x log p(x) in closed form, (..., D) -> (..., D).

        score(x) = sum_k r_k(x) (mu_k - x) / s_k^2, with responsibilities r_k(x) = p(k | x) from a
        softmax over log w_k + log N(x; mu_k, s_k^2 I), stable far from every mode.
        """
        x = self._check_x(x)
        resp = torch.softmax(self._log_joint(x), dim=-1)  # (..., K)
        means, stds = self.means.to(x), self.stds.to(x)
        pull = (means - x[..., None, :]) / stds[:, None] ** 2  # (..., K, D)
        return (resp[..., None] * pull).sum(-2)  # (..., D)

    def noised(self, alpha_bar):
        """The mixture of q(x_t) for x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, x0 ~ self, eps ~ N(0, I).

        Each component N(mu_k, s_k^2 I) becomes N(sqrt(abar) mu_k, (abar s_k^2 + 1 - abar) I); weights
        are unchanged. So `gm.noised(abar).score(x_t)` is the exact score of the noisy marginal.
        """
        alpha_bar = _check_alpha_bar(alpha_bar)
        stds = torch.sqrt(alpha_bar * self.stds**2 + (1.0 - alpha_bar))
        return GaussianMixture(math.sqrt(alpha_bar) * self.means, stds, self.weights)

    def eps_from_score(self, x_t, alpha_bar):
        """The optimal eps-prediction E[eps | x_t] = -sqrt(1 - abar) * grad log q(x_t), (..., D).

        This is what a perfectly trained eps_theta(x_t, t) outputs at a step with alpha_bar[t] = abar.
        """
        alpha_bar = _check_alpha_bar(alpha_bar)
        return -math.sqrt(1.0 - alpha_bar) * self.noised(alpha_bar).score(x_t)

    def posterior_mean_x0(self, x_t, alpha_bar):
        """Tweedie's formula: E[x0 | x_t] = (x_t + (1 - abar) grad log q(x_t)) / sqrt(abar), (..., D).

        The best possible x0_pred in mean squared error; needs abar > 0.
        """
        alpha_bar = _check_alpha_bar(alpha_bar, allow_zero=False)
        x_t = self._check_x(x_t)
        score_t = self.noised(alpha_bar).score(x_t)
        return (x_t + (1.0 - alpha_bar) * score_t) / math.sqrt(alpha_bar)
