"""Unit tests of Assignment 2's checks (checks_ddim.py): each passes course_lib's own functions, written with the
students' signatures, and fails a known wrong function with the message that teaches the fix."""
import math

import numpy as np
import pytest
import torch

from autograde_tests import checks_ddim as C
from course_lib import ddim, schedules


# --- course_lib in the students' signatures -------------------------------------------------------------------

def _schedule_of(alpha_bar):
    """A NoiseSchedule holding exactly `alpha_bar` (betas recovered from it), in alpha_bar's dtype."""
    betas = 1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return schedules.schedule_from_betas(betas, alpha_bar=alpha_bar).to(dtype=alpha_bar.dtype)


def ref_sigma(alpha_bar_t, alpha_bar_prev, eta):
    return ddim.ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)


def ref_weights(alpha_bar_t, alpha_bar_prev, sigma_t):
    omega_t = ((1 - alpha_bar_prev - sigma_t**2) / (1 - alpha_bar_t)).sqrt()
    return alpha_bar_prev.sqrt() - alpha_bar_t.sqrt() * omega_t, omega_t


def ref_timesteps(T, num_steps, spacing="leading"):
    return ddim.make_timesteps(T, num_steps, spacing)


def ref_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
    return ddim.ddim_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise, clip_x0)


def ref_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    return ddim.ddim_sample(model, x_T, _schedule_of(alpha_bar), timesteps, eta, generator, progress=False)


def ref_invert(model, x0, alpha_bar, timesteps):
    return ddim.ddim_invert(model, x0, _schedule_of(alpha_bar), timesteps, progress=False)


def ref_reconstruction(model, x0, alpha_bar, timesteps):
    x_T = ref_invert(model, x0, alpha_bar, timesteps)
    return ((ref_sample(model, x_T, alpha_bar, timesteps) - x0) ** 2).mean().item()


def ref_slerp(z0, z1, lam):
    return ddim.slerp(z0, z1, lam)


def sampler(prev=None, clip=False, noise_at_eta0=False, global_rng=False, ascending=False):
    """A DDIM sampler in the students' signature with one known mistake switched on."""
    def sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
        x = x_T
        pairs = timesteps[::-1] if ascending else timesteps
        for t, t_prev in pairs:
            eps_pred = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
            alpha_bar_prev = prev(alpha_bar, t, t_prev) if prev else (alpha_bar[t_prev] if t_prev >= 0
                                                                        else torch.ones_like(alpha_bar[t]))
            noise = None
            if eta > 0 or noise_at_eta0:
                noise = torch.randn(x.shape, dtype=x.dtype) if global_rng else torch.randn(
                    x.shape, generator=generator, dtype=x.dtype)
            x = ddim.ddim_step(eps_pred, x, alpha_bar[t], alpha_bar_prev, eta, noise if eta > 0 else None, clip)
            if noise_at_eta0 and eta == 0:
                x = x + 0.01 * noise  # "a little noise never hurts"
        return x
    return sample


def fails(check, fn, match, hidden=False):
    with pytest.raises(AssertionError, match=match):
        check(fn, hidden=hidden)


# --- every check passes the reference --------------------------------------------------------------------------

REFERENCES = [(C.check_ddim_sigma, ref_sigma), (C.check_ddim_weights, ref_weights), (C.check_make_timesteps, ref_timesteps), (C.check_ddim_step, ref_step),
              (C.check_ddim_sample, ref_sample), (C.check_ddim_deterministic, ref_sample),
              (C.check_matches_diffusers, ref_sample), (C.check_ddim_invert, ref_invert),
              (C.check_reconstruction_mse, ref_reconstruction), (C.check_slerp, ref_slerp)]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("check,fn", REFERENCES, ids=[c.__name__ for c, _ in REFERENCES])
def test_reference_passes(check, fn, hidden):
    check(fn, hidden=hidden)


@pytest.mark.parametrize("check,fn", REFERENCES, ids=[c.__name__ for c, _ in REFERENCES])
def test_stub_is_reported_as_not_implemented(check, fn):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    fails(check, stub, "not implemented yet")


def test_diffusers_check_says_it_matches_to_1e_6(capsys):
    C.check_matches_diffusers(ref_sample)
    assert "matches diffusers to 1e-6" in capsys.readouterr().out


def test_importing_diffusers_leaves_torch_manual_seed_alone():
    manual_seed = torch.manual_seed
    C._import_ddim_scheduler()
    assert torch.manual_seed is manual_seed


# --- the weights of eq. (12), by matching marginals ------------------------------------------------------------

def test_weights_in_another_correct_form_pass():
    """omega_0 written as in eq. (12) after substituting x0_hat, and omega_t with the variance solved another way."""
    def weights(a, p, sigma):
        direction = (1 - p - sigma * sigma).sqrt()
        return p.sqrt() - direction * (a / (1 - a)).sqrt(), direction / (1 - a).sqrt()
    C.check_ddim_weights(weights)
    C.check_ddim_weights(weights, hidden=True)


def test_weights_mistakes_are_named():
    fails(C.check_ddim_weights, lambda a, p, s: (p.sqrt() - a.sqrt() * ((1 - p - s) / (1 - a)).sqrt(),
                                                 ((1 - p - s) / (1 - a)).sqrt()), "mean matches but the variance")
    fails(C.check_ddim_weights, lambda a, p, s: (p.sqrt(), ((1 - p - s**2) / (1 - a)).sqrt()),
          "variance matches but the mean does not")
    fails(C.check_ddim_weights, lambda a, p, s: (p.sqrt() + a.sqrt() * ((1 - p - s**2) / (1 - a)).sqrt(),
                                                 -((1 - p - s**2) / (1 - a)).sqrt()), "omega_t >= 0")
    fails(C.check_ddim_weights, lambda a, p, s: ref_weights(a, p, s)[::-1], "neither condition")
    fails(C.check_ddim_weights, lambda a, p, s: ref_weights(a, p, s)[0], "pair")


def test_weights_scalar_only_code_fails_the_hidden_check():
    def scalar_only(a, p, s):
        omega_t = math.sqrt((1 - p.item() - s.item() ** 2) / (1 - a.item()))
        return (torch.tensor(math.sqrt(p.item()) - math.sqrt(a.item()) * omega_t, dtype=a.dtype),
                torch.tensor(omega_t, dtype=a.dtype))
    C.check_ddim_weights(scalar_only)
    fails(C.check_ddim_weights, scalar_only, "elementwise|raised|shape", hidden=True)


# --- sigma_t(eta) ------------------------------------------------------------------------------------------------

def test_sigma_erratum_form_is_named():
    fails(C.check_ddim_sigma, lambda a, p, eta: eta * ((1 - p) / (1 - a)).sqrt() * (1 - a / p),
          "inside the square root.*erratum")


def test_sigma_hat_is_named_and_caught_at_the_last_step():
    fails(C.check_ddim_sigma, lambda a, p, eta: eta * (1 - a / p).sqrt(), "fixed large.*last step")


def test_sigma_variance_is_named():
    fails(C.check_ddim_sigma, lambda a, p, eta: ref_sigma(a, p, eta) ** 2, "standard deviation, not the variance")


def test_sigma_without_eta_is_caught():
    fails(C.check_ddim_sigma, lambda a, p, eta: ref_sigma(a, p, 1.0), "multiply by eta")


def test_sigma_with_math_sqrt_fails_on_vectors():
    def scalar_only(a, p, eta):
        return torch.tensor(eta * math.sqrt((1 - p) / (1 - a)) * math.sqrt(1 - a / p), dtype=a.dtype)

    scalar_only(torch.tensor(0.5), torch.tensor(0.6), 1.0)  # fine on 0-dim tensors
    C.check_ddim_sigma(scalar_only)
    fails(C.check_ddim_sigma, scalar_only, "elementwise|raised", hidden=True)


# --- make_timesteps ------------------------------------------------------------------------------------------------

def test_ascending_timesteps_are_caught():
    fails(C.check_make_timesteps, lambda T, S, spacing: ref_timesteps(T, S, spacing)[::-1], "descending")


def test_one_based_trailing_is_caught():
    def one_based(T, S, spacing):
        ts = [t + 1 if spacing == "trailing" else t for t, _ in ref_timesteps(T, S, spacing)]
        return list(zip(ts, ts[1:] + [-1]))

    fails(C.check_make_timesteps, one_based, r"t=1000, outside \[0, 1000\).*off-by-one")


def test_official_quad_with_repeats_is_caught_by_hidden_tests():
    def official_quad(T, S, spacing):
        if spacing != "quad":
            return ref_timesteps(T, S, spacing)
        ts = sorted((np.linspace(0, math.sqrt(0.8 * T), S) ** 2).astype(int).tolist(), reverse=True)
        return list(zip(ts, ts[1:] + [-1]))

    C.check_make_timesteps(official_quad)  # S = 10: no repeats yet
    fails(C.check_make_timesteps, official_quad, "more than once.*at least i", hidden=True)


def test_last_step_not_to_minus_one_is_caught():
    def ends_at_zero(T, S, spacing):
        pairs = ref_timesteps(T, S, spacing)
        return pairs[:-1] + [(pairs[-1][0], 0)] if pairs[-1][0] > 0 else pairs[:-1] + [(0, 0)]

    fails(C.check_make_timesteps, ends_at_zero, "last t_prev must be -1")


def test_other_spacing_formula_is_caught():
    fails(C.check_make_timesteps, lambda T, S, spacing: ref_timesteps(T, S, "leading"), "expected")


# --- ddim_step -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mistake,match", [
    ({"x0_alpha": True}, "cumulative product"),
    ({"sigma_sq_noise": True}, "standard deviation sigma_t, not the variance"),
    ({"dir_no_sqrt": True}, "take the square root"),
    ({"dir_abar_t": True}, "abar_prev, not abar_t"),
    ({"first_abar_t": True}, r"sqrt\(abar_prev\) x0_pred"),
    ({"no_noise": True}, "add sigma_t \\* noise"),
])
def test_step_mistakes_are_named(mistake, match):
    def step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
        return C._eq12(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise, clip=clip_x0, **mistake).to(x_t.dtype)

    fails(C.check_ddim_step, step, match)


def test_step_that_always_clips_is_named():
    def step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
        return ref_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise, True)

    fails(C.check_ddim_step, step, "clipped to \\[-1, 1\\] although clip_x0=False")


def test_step_that_ignores_clip_x0_is_named():
    def step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
        return ref_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise, False)

    fails(C.check_ddim_step, step, "with clip_x0=True clamp")


def test_step_that_uses_noise_at_eta_0_is_told_it_is_none():
    def step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
        return ref_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise, clip_x0) + 0 * noise

    fails(C.check_ddim_step, step, "noise is None")


def test_step_in_float64_for_float32_inputs_is_caught():
    fails(C.check_ddim_step, lambda *args, **kw: ref_step(*args, **kw).double(), "dtype")


# --- the sampler ---------------------------------------------------------------------------------------------------

def test_last_step_to_alpha_bar_minus_1_is_named():
    fails(C.check_ddim_sample, sampler(prev=lambda ab, t, t_prev: ab[t_prev]), r"NaN.*alpha_bar\[-1\]")
    fails(C.check_ddim_deterministic, sampler(prev=lambda ab, t, t_prev: ab[t_prev]), r"alpha_bar\[-1\]")


def test_last_step_to_alpha_bar_0_is_named():
    prev = (lambda ab, t, t_prev: ab[t_prev] if t_prev >= 0 else ab[0])
    fails(C.check_ddim_deterministic, sampler(prev=prev), "not to alpha_bar\\[0\\]", hidden=True)


def test_table_neighbour_is_named():
    prev = (lambda ab, t, t_prev: ab[t - 1] if t > 0 else torch.ones_like(ab[t]))
    fails(C.check_ddim_sample, sampler(prev=prev), "not to t - 1")


def test_clipping_sampler_is_caught():
    fails(C.check_ddim_sample, sampler(clip=True), "differs from the reference")
    fails(C.check_ddim_deterministic, sampler(clip=True), "differs from the reference")


def test_global_rng_noise_is_caught():
    fails(C.check_ddim_sample, sampler(global_rng=True), "generator=generator")


def test_noise_at_eta_0_breaks_determinism():
    fails(C.check_ddim_deterministic, sampler(noise_at_eta0=True), "different x_0 for different generators")


def test_wrong_model_times_are_named():
    fails(C.check_ddim_sample, sampler(ascending=True), "called the model at t")


def test_diffusers_check_fails_a_clipping_sampler():
    fails(C.check_matches_diffusers, sampler(clip=True), "not within 1e-6")


# --- inversion and reconstruction -------------------------------------------------------------------------------

def test_inversion_at_t_prev_is_named():
    def invert(model, x0, alpha_bar, timesteps):
        x = x0
        for t, t_prev in reversed(timesteps):
            alpha_bar_prev = alpha_bar[t_prev] if t_prev >= 0 else torch.ones_like(alpha_bar[t])
            eps_pred = model(x, torch.full((x.shape[0],), t_prev, dtype=torch.long))
            x0_pred = (x - (1 - alpha_bar_prev).sqrt() * eps_pred) / alpha_bar_prev.sqrt()
            x = alpha_bar[t].sqrt() * x0_pred + (1 - alpha_bar[t]).sqrt() * eps_pred
        return x

    fails(C.check_ddim_invert, invert, "step's target t")


def test_inversion_with_the_wrong_x0_pred_is_caught():
    def invert(model, x0, alpha_bar, timesteps):
        x = x0
        for t, t_prev in reversed(timesteps):
            eps_pred = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
            x0_pred = (x - (1 - alpha_bar[t]).sqrt() * eps_pred) / alpha_bar[t].sqrt()  # abar_t, not abar_prev
            x = alpha_bar[t].sqrt() * x0_pred + (1 - alpha_bar[t]).sqrt() * eps_pred
        return x

    fails(C.check_ddim_invert, invert, "differs from the reference.*abar_prev")


def test_reconstruction_rmse_is_named():
    fails(C.check_reconstruction_mse, lambda *args: math.sqrt(ref_reconstruction(*args)), "root of the mean")


def test_reconstruction_must_be_a_float():
    def tensor_per_sample(model, x0, alpha_bar, timesteps):
        x_T = ref_invert(model, x0, alpha_bar, timesteps)
        return ((ref_sample(model, x_T, alpha_bar, timesteps) - x0) ** 2).mean(dim=1)

    fails(C.check_reconstruction_mse, tensor_per_sample, "one finite Python float")


def test_reconstruction_with_eta_1_is_caught():
    def stochastic(model, x0, alpha_bar, timesteps):
        x_T = ref_invert(model, x0, alpha_bar, timesteps)
        x0_rec = ref_sample(model, x_T, alpha_bar, timesteps, 1.0, torch.Generator().manual_seed(0))
        return ((x0_rec - x0) ** 2).mean().item()

    fails(C.check_reconstruction_mse, stochastic, "expected")


# --- slerp ---------------------------------------------------------------------------------------------------------

def test_lerp_is_named():
    fails(C.check_slerp, lambda z0, z1, lam: (1 - lam) * z0 + lam * z1, "straight line \\(lerp\\)")


def test_swapped_weights_are_named():
    fails(C.check_slerp, lambda z0, z1, lam: ref_slerp(z0, z1, 1 - lam), "swapped")


def test_slerp_without_fallback_is_named():
    def no_fallback(z0, z1, lam):
        a, b = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)  # (B, D)
        cos = ((a * b).sum(1, keepdim=True) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True)))
        theta = cos.clamp(-1, 1).acos() * (cos < 0.9999)  # identical rows: theta = 0 exactly
        return ((((1 - lam) * theta).sin() * a + (lam * theta).sin() * b) / theta.sin()).reshape(z0.shape)

    fails(C.check_slerp, no_fallback, "identical rows.*straight line")


def test_one_angle_for_the_whole_batch_is_caught():
    def one_theta(z0, z1, lam):
        a, b = z0.reshape(-1), z1.reshape(-1)
        theta = ((a @ b) / (a.norm() * b.norm())).clamp(-1, 1).acos()
        return ((((1 - lam) * theta).sin() * z0 + (lam * theta).sin() * z1) / theta.sin())

    fails(C.check_slerp, one_theta, "one theta per row")
