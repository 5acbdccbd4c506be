"""The forward (noising) process q of DDPM, in closed form and step by step.

Closed form, DDPM eq. (4):  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
One step,   DDPM eq. (2):  q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)
Chaining the single steps from x_0 gives the same marginal as the closed form (tests check it).
"""
import torch

from course_lib.device import randn
from course_lib.schedules import check_timestep


def expand_to(v, x):
    """Reshape a per-sample (B,) tensor so it broadcasts against x of shape (B, ...)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ..., 1)


def add_noise(x0, t, noise, schedule):
    """Sample x_t ~ q(x_t | x_0) in one go: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    x0, noise: (B, ...) float; t: LongTensor (B,) with 0 <= t < T. Returns x_t, shape of x0.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match")
    t = torch.as_tensor(t, device=x0.device)
    if t.is_floating_point():
        raise ValueError(f"t must hold integer timesteps (a LongTensor), got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(x0.shape[0])  # (B,)
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must be a LongTensor of shape (B,) = ({x0.shape[0]},), got {tuple(t.shape)}")
    check_timestep(t, schedule.T)
    alpha_bar_t = expand_to(schedule.alpha_bar.to(x0.device)[t], x0)  # (B, 1, ..., 1)
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * noise


def forward_step(x_prev, t, noise, schedule):
    """One Markov step x_{t-1} -> x_t of q: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise.

    x_prev, noise: (B, ...); t: int, the step being taken (0 maps x_0 to the first noisy sample).
    """
    check_timestep(t, schedule.T)
    if noise.shape != x_prev.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x has {tuple(x_prev.shape)}; they must match")
    return schedule.alphas[t].sqrt() * x_prev + schedule.betas[t].sqrt() * noise


def forward_chain(x0, t, schedule, generator=None):
    """Run q step by step from x_0 through steps 0, ..., t and return x_t (same shape as x0).

    Slow (t + 1 steps) and only for showing that it matches `add_noise` in distribution.
    """
    check_timestep(t, schedule.T)
    x = x0
    for s in range(t + 1):
        noise = randn(x.shape, generator, x.device, x.dtype)
        x = forward_step(x, s, noise, schedule)
    return x
