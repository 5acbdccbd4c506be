"""DDIM sampling (Song, Meng, Ermon 2021), in DDPM's notation with 0-based timesteps.

The DDIM paper writes alpha_t for what DDPM (and this course) calls abar_t = alpha_bar[t].
A sampler visits a descending sub-sequence of timesteps as explicit pairs (t, t_prev); the last
pair has t_prev = -1, which stands for abar = 1 (the clean data x_0).

  x0_pred     = (x_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t)                       eq. (12)
  sigma_t     = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)   eq. (16)
  x_prev      = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma_t^2) eps_pred + sigma_t z
eta = 1 on the full sequence is DDPM with the "fixed small" variance; eta = 0 is deterministic.
"""
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from course_lib.ddpm import predict_x0
from course_lib.device import randn

SPACINGS = ("leading", "trailing", "linspace", "quad")


def make_timesteps(T, num_steps, spacing="leading"):
    """The S = num_steps timesteps a sampler visits, as descending (t, t_prev) pairs.

    spacing: "leading"  t = 0, T//S, 2 T//S, ...           (diffusers' default, DDIM's "uniform")
             "trailing" t = round(T - i T/S) - 1           (ends at t = T-1)
             "linspace" t = round(i (T-1) / (S-1))         (both ends included)
             "quad"     t = floor(0.8 T i^2 / (S-1)^2)     (DDIM's CIFAR-10 choice), raised to at
                        least i so that no step repeats (the official code repeats steps for S >= 50)
    Returns a list of S pairs of ints [(t, t_prev), ...]: t descending, each t_prev the next t, and
    the last t_prev = -1 (abar = 1).  make_timesteps(1000, 4, "trailing") -> [(999, 749), (749, 499),
    (499, 249), (249, -1)].
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= T:
        raise ValueError(f"num_steps={num_steps!r} must be an integer from 1 to the T={T} training steps")
    S, i = int(num_steps), np.arange(num_steps)
    if spacing == "leading":
        ts = i * (T // S)
    elif spacing == "trailing":
        ts = np.round(T - i * (T / S)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, S).round().astype(np.int64)
    else:  # quad
        ts = np.maximum(i, (np.linspace(0, math.sqrt(0.8 * T), S) ** 2).astype(np.int64))
    ts = [int(t) for t in ts[::-1]]  # descending
    return list(zip(ts, ts[1:] + [-1]))


def check_timesteps(timesteps, T):
    """Validate (t, t_prev) pairs for a T-step schedule; return them as a list of int pairs."""
    pairs = [(int(t), int(t_prev)) for t, t_prev in timesteps]
    if not pairs:
        raise ValueError("timesteps is empty; build it with make_timesteps(T, num_steps, spacing)")
    for k, (t, t_prev) in enumerate(pairs):
        if not 0 <= t < T:
            raise ValueError(f"timestep t={t} is outside [0, {T}): timesteps are 0-based")
        if not t_prev < t:
            raise ValueError(f"pair {k} goes from t={t} to t_prev={t_prev}; sampling must go down in t")
        expected = pairs[k + 1][0] if k + 1 < len(pairs) else -1
        if t_prev != expected:
            raise ValueError(f"pair {k} ends at t_prev={t_prev} but the next step starts at {expected}; "
                             "each t_prev must be the next t, and the last t_prev must be -1 (abar = 1)")
    return pairs


def alpha_bar_at(schedule, t):
    """alpha_bar[t] as a 0-dim tensor, with alpha_bar at t = -1 equal to 1 (the clean data)."""
    return schedule.alpha_bar[t] if t >= 0 else torch.ones((), dtype=schedule.dtype, device=schedule.device)


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """sigma_t(eta), DDIM eq. (16): eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).

    Uses abar of the pair actually visited, so it is right on sub-sequences (the table's beta_t is not).
    Floats or tensors that broadcast; returns a tensor. sigma_t <= sqrt(1 - abar_prev) whenever eta <= 1.
    """
    if eta < 0:
        raise ValueError(f"eta={eta} must be >= 0 (0: deterministic DDIM, 1: DDPM-like noise)")
    alpha_bar_t, alpha_bar_prev = torch.as_tensor(alpha_bar_t), torch.as_tensor(alpha_bar_prev)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * (1 - alpha_bar_t / alpha_bar_prev).sqrt()


def ddim_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip_x0=False):
    """One DDIM step x_t -> x_prev, DDIM eq. (12).

    eps_pred, x_t: (B, ...); alpha_bar_t, alpha_bar_prev: abar at t and at t_prev (1.0 for the last
    step), floats or 0-dim tensors. noise: z ~ N(0, I) shaped like x_t, required when eta > 0 (pass
    it explicitly so stochastic runs are reproducible). clip_x0 clamps x0_pred to [-1, 1]; off by
    default, as in the paper. Returns x_prev, shape of x_t.
    """
    # 1. predicted x0, DDIM eq. (12), first term
    x0_pred = predict_x0(eps_pred, x_t, alpha_bar_t)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
    # 2. sigma_t(eta), eq. (16)
    sigma_t = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta).to(x_t)
    # 3. direction pointing to x_t, eq. (12), second term
    dir_xt = (1 - alpha_bar_prev - sigma_t**2).clamp(min=0).sqrt() * eps_pred
    # 4. x_prev, eq. (12), with the random noise sigma_t z as the third term
    x_prev = alpha_bar_prev**0.5 * x0_pred + dir_xt
    if eta > 0:
        if noise is None:
            raise ValueError(f"eta={eta} > 0 needs `noise` (z ~ N(0, I) shaped like x_t)")
        if noise.shape != x_t.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_t has {tuple(x_t.shape)}; they must match")
        x_prev = x_prev + sigma_t * noise
    return x_prev


@torch.no_grad()
def ddim_sample(model, x_T, schedule, timesteps, eta=0.0, generator=None, clip_x0=False,
                progress=True, return_trajectory=False):
    """Sample with DDIM over `timesteps` (pairs from make_timesteps), eq. (12) at each pair.

    model(x_t, t) -> eps_pred with t a LongTensor (B,); x_T: (B, ...) standard normal start.
    When eta > 0, one noise draw per step from `generator` (as diffusers' DDIMScheduler does).
    Returns x_0 (B, ...), or (x_0, trajectory) with trajectory the list of S + 1 tensors x_T, ..., x_0.
    """
    pairs = check_timesteps(timesteps, schedule.T)
    if eta < 0:
        raise ValueError(f"eta={eta} must be >= 0 (0: deterministic DDIM, 1: DDPM-like noise)")
    schedule = schedule.to(device=x_T.device, dtype=x_T.dtype)
    x = x_T
    trajectory = [x]
    for t, t_prev in tqdm(pairs, desc=f"DDIM eta={eta}", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        eps_pred = model(x, t_batch)
        noise = randn(x.shape, generator, x.device, x.dtype) if eta > 0 else None
        x = ddim_step(eps_pred, x, schedule.alpha_bar[t], alpha_bar_at(schedule, t_prev), eta, noise, clip_x0)
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def ddim_invert(model, x0, schedule, timesteps, progress=True, return_trajectory=False):
    """Deterministic DDIM inversion x_0 -> x_T: eq. (12) with eta = 0, run up the same pairs.

    Each step goes from t_prev to t using eps_pred = model(x_{t_prev}, t), evaluated at the step's
    target t (the only model time defined at the first step, where t_prev = -1), as diffusers'
    DDIMInverseScheduler does. x0: (B, ...). Returns x_T, or (x_T, trajectory) from x_0 up to x_T.
    """
    pairs = check_timesteps(timesteps, schedule.T)
    schedule = schedule.to(device=x0.device, dtype=x0.dtype)
    x = x0
    trajectory = [x]
    for t, t_prev in tqdm(pairs[::-1], desc="DDIM inversion", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        eps_pred = model(x, t_batch)
        x0_pred = predict_x0(eps_pred, x, alpha_bar_at(schedule, t_prev))
        alpha_bar_t = schedule.alpha_bar[t]
        x = alpha_bar_t.sqrt() * x0_pred + (1 - alpha_bar_t).sqrt() * eps_pred
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


def slerp(z0, z1, alpha):
    """Spherical interpolation between latents z0 and z1 (each (B, ...)), row by row, alpha in [0, 1].

    slerp = sin((1 - alpha) theta) / sin(theta) z0 + sin(alpha theta) / sin(theta) z1, theta the angle
    between the flattened rows. Keeps the norm that Gaussian latents have, where a straight line
    (lerp) passes through low-norm points the model never saw. Rows with sin(theta) <= 1e-6, parallel or opposite
    rows of any lengths (z1 = c z0), take the straight line (1 - alpha) z0 + alpha z1. For exactly opposite rows the
    great circle is not defined; in float32 rounding can leave sin(theta) ~ 1e-4 there, so only float64 decides
    such rows reliably (the graders test them in float64 only).
    """
    if z0.shape != z1.shape:
        raise ValueError(f"z0 has shape {tuple(z0.shape)} but z1 has {tuple(z1.shape)}; they must match")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    a, b = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)  # (B, D)
    cos_theta = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # (B,)
    theta = cos_theta.clamp(-1, 1).acos().unsqueeze(1)  # (B, 1)
    sin_theta = theta.sin()
    spherical = (((1 - alpha) * theta).sin() * a + (alpha * theta).sin() * b) / sin_theta  # (B, D)
    straight = (1 - alpha) * a + alpha * b  # (B, D), used where the rows are (anti)parallel
    return torch.where(sin_theta > 1e-6, spherical, straight).reshape(z0.shape)
