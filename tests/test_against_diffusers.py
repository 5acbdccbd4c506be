"""Our samplers against diffusers, the outside reference, where the definitions coincide.

diffusers implements the DDIM paper exactly with DDIMScheduler(clip_sample=False, set_alpha_to_one=True,
steps_offset=0); its defaults clip x0 to [-1, 1], which the paper does not. Same eps-model, same noise
(one torch.randn draw per step from generators seeded alike), float32, agreement to 1e-5.

Both samplers read the same alpha_bar table (`with_our_table`), so these tests compare sampler math.
The tables themselves are compared in `test_schedules_match`: diffusers multiplies 1000 float32 numbers,
we multiply in float64 and round once, which is closer to the exact product (`test_our_table_is_closer`).
"""
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

from course_lib.ddim import ddim_invert, ddim_sample, make_timesteps
from course_lib.ddpm import ddpm_sample, ddpm_step
from course_lib.schedules import make_schedule

PAPER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
             clip_sample=False, set_alpha_to_one=True, steps_offset=0)
ATOL = 1e-5


def with_our_table(scheduler, schedule):
    """Make a diffusers scheduler use our alpha_bar table (float32, rounded once from float64)."""
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()
    return scheduler


def x_T(seed=0, shape=(4, 1, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def diffusers_ddim(model, x, S, eta, spacing="leading", clip=False, seed=1):
    sched = with_our_table(DDIMScheduler(**{**PAPER, "clip_sample": clip}, timestep_spacing=spacing),
                           make_schedule("linear"))
    sched.set_timesteps(S)
    g = torch.Generator().manual_seed(seed)
    for t in sched.timesteps:
        eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = sched.step(eps, t, x, eta=eta, generator=g).prev_sample
    return x


@pytest.mark.parametrize("name,diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedules_match(name, diffusers_name):
    ours = make_schedule(name)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name)
    assert torch.allclose(ours.betas, theirs.betas, atol=1e-7)
    assert torch.allclose(ours.alpha_bar, theirs.alphas_cumprod, rtol=1e-5, atol=1e-8)


def test_our_table_is_closer_to_the_exact_product():
    exact = make_schedule("linear", dtype=torch.float64).alpha_bar
    ours = make_schedule("linear").alpha_bar.double()
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.double()
    assert ((ours - exact) / exact).abs().max() < ((theirs - exact) / exact).abs().max()


def diffusers_ddpm(model, x, schedule, variance, seed=1):
    sched = with_our_table(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                         variance_type=variance), schedule)
    sched.set_timesteps(1000)
    g = torch.Generator().manual_seed(seed)
    for t in sched.timesteps:
        eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = sched.step(eps, t, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_matches_ddpm_scheduler(schedule64, toy_eps, variance):
    """In float64 both are exact and agree to 1e-5 (in fact to about 1e-12)."""
    x = x_T().double()
    theirs = diffusers_ddpm(toy_eps, x, schedule64, variance)
    ours = ddpm_sample(toy_eps, x, schedule64, variance, generator=torch.Generator().manual_seed(1),
                       progress=False)
    assert (ours - theirs).abs().max() < ATOL


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_in_float32_is_at_least_as_exact_as_diffusers(schedule, schedule64, toy_eps, variance):
    """In float32 diffusers recomputes beta_t as 1 - abar_t / abar_prev, which cancels near t = 0 (about
    1e-3 relative error in beta_1); we read float64-computed coefficients. Measured against the float64
    run, ours is closer, and both stay within 1e-3."""
    exact, g = x_T().double(), torch.Generator().manual_seed(1)
    for t in range(999, -1, -1):  # the float64 reference, fed the float32 noise that both others draw
        noise = torch.randn(exact.shape, generator=g).double() if t > 0 else None
        eps = toy_eps(exact, torch.full((exact.shape[0],), t, dtype=torch.long))
        exact = ddpm_step(eps, exact, t, schedule64, variance, noise)
    ours = ddpm_sample(toy_eps, x_T(), schedule, variance, generator=torch.Generator().manual_seed(1),
                       progress=False)
    theirs = diffusers_ddpm(toy_eps, x_T(), schedule, variance)
    err_ours, err_theirs = (ours - exact).abs().max(), (theirs - exact).abs().max()
    assert err_ours <= err_theirs < 1e-3, (err_ours, err_theirs)


@pytest.mark.parametrize("S", [10, 50, 1000])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_ddim_scheduler(schedule, toy_eps, S, eta):
    theirs = diffusers_ddim(toy_eps, x_T(), S, eta)
    ours = ddim_sample(toy_eps, x_T(), schedule, make_timesteps(1000, S, "leading"), eta=eta,
                       generator=torch.Generator().manual_seed(1), progress=False)
    assert (ours - theirs).abs().max() < ATOL


def test_ddim_with_clipping_matches_diffusers_default(schedule, toy_eps):
    x = 3 * x_T()  # far from the data, so x0_pred leaves [-1, 1] and clipping matters
    theirs = diffusers_ddim(toy_eps, x, 20, 0.5, clip=True)
    ours = ddim_sample(toy_eps, x, schedule, make_timesteps(1000, 20), eta=0.5, clip_x0=True,
                       generator=torch.Generator().manual_seed(1), progress=False)
    unclipped = ddim_sample(toy_eps, x, schedule, make_timesteps(1000, 20), eta=0.5,
                            generator=torch.Generator().manual_seed(1), progress=False)
    assert (ours - theirs).abs().max() < ATOL
    assert (unclipped - theirs).abs().max() > 1e-3, "the test must be one where clipping changes the result"


@pytest.mark.parametrize("S", [10, 50])
def test_trailing_matches_when_S_divides_T(schedule, toy_eps, S):
    theirs = diffusers_ddim(toy_eps, x_T(), S, 0.0, spacing="trailing")
    ours = ddim_sample(toy_eps, x_T(), schedule, make_timesteps(1000, S, "trailing"), progress=False)
    assert (ours - theirs).abs().max() < ATOL


@pytest.mark.parametrize("spacing,S", [("linspace", 10), ("linspace", 50), ("trailing", 3), ("trailing", 7)])
def test_same_timesteps_but_diffusers_steps_to_the_wrong_t_prev(schedule, toy_eps, spacing, S):
    """diffusers#12633, #11347: DDIMScheduler.step takes t_prev = t - T // S, which is not the next element
    of a linspace sequence, nor of a trailing one when S does not divide T. Ours uses the next element."""
    sched = DDIMScheduler(**PAPER, timestep_spacing=spacing)
    sched.set_timesteps(S)
    pairs = make_timesteps(1000, S, spacing)
    assert sched.timesteps.tolist() == [t for t, _ in pairs], "both visit the same timesteps"
    implied_prev = [t - 1000 // S for t in sched.timesteps.tolist()]
    ours_prev = [p for _, p in pairs]
    assert implied_prev != ours_prev
    # our sampler equals a hand-written eq. (12) loop over the true pairs; diffusers' result differs
    x = x_T()
    for t, t_prev in pairs:
        ab_t = schedule.alpha_bar[t]
        ab_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        eps = toy_eps(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x = ab_prev.sqrt() * (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt() + (1 - ab_prev).sqrt() * eps
    ours = ddim_sample(toy_eps, x_T(), schedule, pairs, progress=False)
    assert (ours - x).abs().max() < ATOL
    theirs = diffusers_ddim(toy_eps, x_T(), S, 0.0, spacing=spacing)
    assert (ours - theirs).abs().max() > 1e-3


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("S", [10, 50])
def test_inversion_matches_ddim_inverse_scheduler(schedule, toy_eps, spacing, S):
    sched = with_our_table(DDIMInverseScheduler(**PAPER, timestep_spacing=spacing), schedule)
    sched.set_timesteps(S)
    pairs = make_timesteps(1000, S, spacing)
    assert sched.timesteps.tolist() == [t for t, _ in pairs][::-1]
    x0 = x_T(seed=3).clamp(-1, 1)
    x = x0
    for t in sched.timesteps:
        eps = toy_eps(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = sched.step(eps, t, x).prev_sample
    ours = ddim_invert(toy_eps, x0, schedule, pairs, progress=False)
    assert (ours - x).abs().max() < ATOL
