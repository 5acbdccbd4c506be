"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), written for 0-based t = T-1, ..., 0.

Notation: abar_t = alpha_bar[t], abar_prev = alpha_bar[t - 1] (1.0 at t = 0).
  x0_pred   = (x_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t)                         eq. (15)
  mean      = sqrt(abar_prev) beta_t / (1 - abar_t) x0_pred
              + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) x_t                          eq. (7)
  variance  = beta_tilde_t = (1 - abar_prev) / (1 - abar_t) beta_t   ("fixed_small")     eq. (7)
            or beta_t                                                  ("fixed_large")
  x_{t-1}   = mean + sqrt(variance) z,  z ~ N(0, I), and z = 0 at the last step t = 0.
Without clipping, the mean equals DDPM eq. (11): (x_t - beta_t / sqrt(1 - abar_t) eps_pred) / sqrt(alpha_t).
"""
import torch
from tqdm.auto import tqdm

from course_lib.device import randn
from course_lib.schedules import check_timestep

VARIANCES = ("fixed_small", "fixed_large")


def predict_x0(eps_pred, x_t, alpha_bar_t):
    """x0 implied by a noise prediction: (x_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t). Shapes of x_t."""
    return (x_t - (1 - alpha_bar_t) ** 0.5 * eps_pred) / alpha_bar_t**0.5


def posterior_mean(x0, x_t, t, schedule):
    """Mean of q(x_{t-1} | x_t, x_0), DDPM eq. (7). x0, x_t: (B, ...); t: int. Returns (B, ...).

    mean = sqrt(abar_prev) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) x_t,
    with both coefficients read from the schedule, which computes them in float64.
    """
    check_timestep(t, schedule.T)
    return schedule.posterior_mean_coef_x0[t] * x0 + schedule.posterior_mean_coef_xt[t] * x_t


def posterior_variance(t, schedule, variance="fixed_small"):
    """Variance of the reverse step at t: beta_tilde_t ("fixed_small") or beta_t ("fixed_large"). 0-dim tensor."""
    check_timestep(t, schedule.T)
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    return schedule.posterior_variance[t] if variance == "fixed_small" else schedule.betas[t]


def ddpm_step(eps_pred, x_t, t, schedule, variance="fixed_small", noise=None, clip_x0=False):
    """One ancestral step x_t -> x_{t-1} of DDPM.

    eps_pred, x_t: (B, ...); t: int in [0, T); noise: z ~ N(0, I) of x_t's shape, required for t > 0
    (pass it explicitly so runs are reproducible; it is ignored at t = 0). clip_x0 clamps x0_pred to
    [-1, 1] (off by default: DDPM's equations have no clipping). Returns x_{t-1}, shape of x_t.
    """
    check_timestep(t, schedule.T)
    # 1. predicted x0, DDPM eq. (15)
    x0_pred = predict_x0(eps_pred, x_t, schedule.alpha_bar[t])
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
    # 2. posterior mean, DDPM eq. (7)
    mean = posterior_mean(x0_pred, x_t, t, schedule)
    if t == 0:
        return mean  # the last step adds no noise
    # 3. add noise with the chosen variance
    if noise is None:
        raise ValueError(f"ddpm_step at t={t} > 0 needs `noise` (z ~ N(0, I) shaped like x_t)")
    if noise.shape != x_t.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x_t has {tuple(x_t.shape)}; they must match")
    return mean + posterior_variance(t, schedule, variance).sqrt() * noise


@torch.no_grad()
def ddpm_sample(model, x_T, schedule, variance="fixed_small", generator=None, clip_x0=False,
                progress=True, return_trajectory=False):
    """Sample with all T ancestral steps, t = T-1, ..., 0 (DDPM Algorithm 2).

    model(x_t, t) -> eps_pred with t a LongTensor (B,); x_T: (B, ...) standard normal start.
    generator: a torch.Generator for the per-step noise (one torch.randn draw per t > 0, as diffusers does).
    Returns x_0 (B, ...), or (x_0, trajectory) with trajectory a list of T + 1 tensors x_T, ..., x_0.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    schedule = schedule.to(device=x_T.device, dtype=x_T.dtype)
    x = x_T
    trajectory = [x]
    for t in tqdm(range(schedule.T - 1, -1, -1), desc="DDPM", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        eps_pred = model(x, t_batch)
        noise = randn(x.shape, generator, x.device, x.dtype) if t > 0 else None
        x = ddpm_step(eps_pred, x, t, schedule, variance, noise, clip_x0)
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
