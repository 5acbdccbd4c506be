"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), in DDPM's notation with 0-based timesteps.

Notation clash, said once: the DPM-Solver papers, and diffusers' DPMSolverMultistepScheduler, write
  alpha_t  = sqrt(abar_t)          (not the course's alpha_t = 1 - beta_t, `schedule.alphas`)
  sigma_t  = sqrt(1 - abar_t)      (not DDIM's noise scale sigma_t(eta); there is no eta here)
  lambda_t = log(alpha_t / sigma_t) = (log abar_t - log(1 - abar_t)) / 2, half the log-SNR; it grows as t falls.
This module uses those names, as the papers and diffusers do, and never reads `schedule.alphas`.

A sampler visits the (t, t_prev) pairs of make_timesteps; h = lambda_prev - lambda_t > 0 is the step in lambda.
With the data prediction x0_pred = (x_t - sigma_t eps_pred) / alpha_t, the probability-flow ODE is solved
exactly in its linear part (variation of constants, as in the DPM-Solver++ paper):
  x_prev = (sigma_prev / sigma_t) x_t + sigma_prev int_{lambda_t}^{lambda_prev} e^lambda x0_pred(lambda) dlambda
First order, x0_pred frozen at t (Alg. 2, first step), which is deterministic DDIM (eq. 12, eta = 0):
  x_prev = (sigma_prev / sigma_t) x_t + alpha_prev (1 - e^-h) x0_pred
Second order, multistep (2M, Alg. 2, later steps): the previous step's x0_pred_last at t_last > t gives a slope,
  r = h_last / h,   h_last = lambda_t - lambda_last,   D = (1 + 1/(2r)) x0_pred - 1/(2r) x0_pred_last
  x_prev = (sigma_prev / sigma_t) x_t + alpha_prev (1 - e^-h) D
One model call per step, as DDIM. The last step lands on abar = 1 (t_prev = -1: sigma = 0, lambda = +inf) and
returns x0_pred: first order by necessity, since a slope in lambda cannot be carried to infinity (diffusers:
final_sigmas_type="zero"). Coefficients are computed in float64 from the schedule's table, then applied in
the dtype of x.
"""
import math

import torch
from tqdm.auto import tqdm

from course_lib.ddim import check_timesteps
from course_lib.ddpm import predict_x0

ORDERS = (1, 2)


def _as_float(alpha_bar, name):
    """abar as a Python float (float64), checked to lie in (0, 1]."""
    if torch.is_tensor(alpha_bar):
        if alpha_bar.numel() != 1:
            raise ValueError(f"{name} has shape {tuple(alpha_bar.shape)}; pass one value, e.g. schedule.alpha_bar[t]")
        alpha_bar = alpha_bar.item()
    alpha_bar = float(alpha_bar)
    if not 0.0 < alpha_bar <= 1.0:
        raise ValueError(f"{name}={alpha_bar} must lie in (0, 1]: it is abar = prod_(s<=t) alpha_s")
    return alpha_bar


def lambda_from_alpha_bar(alpha_bar):
    """lambda = log(alpha / sigma) = (log abar - log(1 - abar)) / 2 for abar in (0, 1]: a float, +inf at abar = 1."""
    alpha_bar = _as_float(alpha_bar, "alpha_bar")
    if alpha_bar == 1.0:
        return math.inf
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


def dpm_solver_step(x0_pred, x_t, alpha_bar_t, alpha_bar_prev, x0_pred_last=None, alpha_bar_last=None):
    """One DPM-Solver++ step x_t -> x_prev: first order (deterministic DDIM) without history, 2M with it.

    x0_pred: the data prediction at t (not eps_pred: the "++" solvers integrate x0_pred), shape of x_t (B, ...).
    alpha_bar_t, alpha_bar_prev: abar at t and at t_prev (1.0 for the last step), floats or 0-dim tensors.
    x0_pred_last, alpha_bar_last: the previous step's x0_pred and its abar, at t_last > t (so alpha_bar_last <
    alpha_bar_t); None on the first step. Returns x_prev, shape and dtype of x_t.
    """
    alpha_bar_t, alpha_bar_prev = _as_float(alpha_bar_t, "alpha_bar_t"), _as_float(alpha_bar_prev, "alpha_bar_prev")
    if alpha_bar_t == 1.0:
        raise ValueError("alpha_bar_t=1 is the clean data: there is no noise left to remove at t")
    if not alpha_bar_prev > alpha_bar_t:
        raise ValueError(f"alpha_bar_prev={alpha_bar_prev:.6g} <= alpha_bar_t={alpha_bar_t:.6g}: a sampling step must "
                         "go to less noise (larger abar, larger lambda)")
    if x0_pred.shape != x_t.shape:
        raise ValueError(f"x0_pred has shape {tuple(x0_pred.shape)} but x_t has {tuple(x_t.shape)}; they must match")
    if (x0_pred_last is None) != (alpha_bar_last is None):
        raise ValueError("pass x0_pred_last and alpha_bar_last together (the history of the previous step), or neither")
    if x0_pred_last is not None:
        alpha_bar_last = _as_float(alpha_bar_last, "alpha_bar_last")
        if not alpha_bar_last < alpha_bar_t:
            raise ValueError(f"alpha_bar_last={alpha_bar_last:.6g} >= alpha_bar_t={alpha_bar_t:.6g}: the history must "
                             "come from the previous, noisier step t_last > t")
        if x0_pred_last.shape != x_t.shape:
            raise ValueError(f"x0_pred_last has shape {tuple(x0_pred_last.shape)} but x_t has {tuple(x_t.shape)}")
    # 1. the last step lands on abar = 1: sigma_prev = 0 and 1 - e^-h = 1, so x_prev = x0_pred (first order)
    if alpha_bar_prev == 1.0:
        return x0_pred
    # 2. the step in lambda, and the coefficients of the exact linear part (variation of constants)
    lambda_t, lambda_prev = lambda_from_alpha_bar(alpha_bar_t), lambda_from_alpha_bar(alpha_bar_prev)
    h = lambda_prev - lambda_t
    sigma_t, sigma_prev = math.sqrt(1.0 - alpha_bar_t), math.sqrt(1.0 - alpha_bar_prev)
    alpha_prev = math.sqrt(alpha_bar_prev)
    # 3. first order: x0_pred frozen over the step (Alg. 2, i = 1), which is DDIM with eta = 0
    D = x0_pred
    # 4. second order (2M): a backward difference in lambda with the previous step's x0_pred (Alg. 2, i >= 2)
    if x0_pred_last is not None:
        r = (lambda_t - lambda_from_alpha_bar(alpha_bar_last)) / h  # h_last / h
        D = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_last
    # 5. x_prev = (sigma_prev / sigma_t) x_t + alpha_prev (1 - e^-h) D, with 1 - e^-h = -expm1(-h)
    return (sigma_prev / sigma_t) * x_t + (alpha_prev * -math.expm1(-h)) * D


@torch.no_grad()
def dpm_solver_sample(model, x_T, schedule, timesteps, order=2, clip_x0=False, progress=True,
                      return_trajectory=False):
    """Sample with DPM-Solver++(2M) over `timesteps` (pairs from make_timesteps): one model call per pair.

    model(x_t, t) -> eps_pred with t a LongTensor (B,); x_T: (B, ...) standard normal start. order=2 is
    DPM-Solver++(2M): its first step is first order (no history yet) and so is its last (to abar = 1);
    order=1 is first order throughout, which is deterministic DDIM. clip_x0 clamps every x0_pred to [-1, 1]
    (also the one kept as history); off by default. Deterministic: no generator.
    Returns x_0 (B, ...), or (x_0, trajectory) with trajectory the list of S + 1 tensors x_T, ..., x_0.
    """
    pairs = check_timesteps(timesteps, schedule.T)
    if order not in ORDERS:
        raise ValueError(f"order={order!r} must be 1 (first order: deterministic DDIM) or 2 (DPM-Solver++(2M))")
    alpha_bar = schedule.alpha_bar.detach().to("cpu", torch.float64)  # (T,) the table, read as exact floats
    x = x_T
    trajectory = [x]
    x0_pred_last = alpha_bar_last = None  # the history: x0_pred of the previous step, kept across steps
    desc = "DPM-Solver++(2M)" if order == 2 else "DPM-Solver++, first order (DDIM)"
    for t, t_prev in tqdm(pairs, desc=desc, disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        eps_pred = model(x, t_batch)
        # 1. data prediction x0_pred, DDPM eq. (15): (x_t - sigma_t eps_pred) / alpha_t
        x0_pred = predict_x0(eps_pred, x, alpha_bar[t].item())
        if clip_x0:
            x0_pred = x0_pred.clamp(-1, 1)
        # 2. one step, with the previous step's x0_pred as history when order = 2
        alpha_bar_prev = alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
        if order == 2 and x0_pred_last is not None:
            x = dpm_solver_step(x0_pred, x, alpha_bar[t].item(), alpha_bar_prev, x0_pred_last, alpha_bar_last)
        else:
            x = dpm_solver_step(x0_pred, x, alpha_bar[t].item(), alpha_bar_prev)
        x0_pred_last, alpha_bar_last = x0_pred, alpha_bar[t].item()
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
