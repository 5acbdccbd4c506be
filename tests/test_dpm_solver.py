"""DPM-Solver++(2M) (course_lib.dpm_solver): against diffusers, against DDIM, and against closed forms.

diffusers' DPMSolverMultistepScheduler implements the same method with these settings, which make the
definitions coincide:
  algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint"  (the paper's Algorithm 2)
  prediction_type="epsilon", thresholding=False, use_karras_sigmas=False  (and no other re-spacing of sigmas)
  final_sigmas_type="zero"  (the last step lands on abar = 1, our t_prev = -1; "sigma_min" stops at abar[0])
  euler_at_final=False, lower_order_final=True (defaults; with order 2 and a zero final sigma neither changes
  anything, since the last step is first order either way: `test_final_step_options`).
Timesteps: diffusers' "trailing" spacing visits our make_timesteps(T, S, "trailing"); its "linspace" and
"leading" are not ours (they split [0, T) into S + 1 points and drop the last), so for the other spacings we
pass our timesteps explicitly with set_timesteps(timesteps=...). Both read our alpha_bar table (`with_our_table`).
Deliberate differences: diffusers computes alpha_t, sigma_t and lambda_t in float32 from
sigma = sqrt((1 - abar) / abar) and upcasts the sample to float32 (it cannot run in float64); we compute the
coefficients in float64 from abar and apply them in the dtype of x. In float32 the two agree to about 1e-6,
except with S = 1 or 2 steps, where the first jump from t = 999 divides by sqrt(abar_999) = 0.0064 and both are
only within ~1e-4 of the float64 answer. Our clip_x0 (a plain clamp) has no diffusers counterpart (its
thresholding is dynamic), so clipping is compared with a hand-written loop instead.
"""
import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from conftest import GaussianEps, ToyEps
from course_lib import UNet, ddim_sample, ddim_step, make_schedule, make_timesteps, predict_x0
from course_lib.data2d import GaussianMixture
from course_lib.dpm_solver import dpm_solver_sample, dpm_solver_step, lambda_from_alpha_bar

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")]
ATOL = 1e-5
COINCIDE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", prediction_type="epsilon",
                thresholding=False, use_karras_sigmas=False, final_sigmas_type="zero", euler_at_final=False,
                lower_order_final=True)


class ExactMixtureEps(torch.nn.Module):
    """eps*(x_t, t) = -sqrt(1 - abar_t) grad log q(x_t) of the course's 8-Gaussian mixture: exact, no training."""

    def __init__(self, schedule):
        super().__init__()
        self.mixture, self.alpha_bar = GaussianMixture.default(), schedule.alpha_bar

    def forward(self, x_t, t):  # x_t (B, 2), t (B,): the samplers pass one t for the whole batch
        return self.mixture.eps_from_score(x_t, self.alpha_bar[t[0]])


class SmallNetEps(torch.nn.Module):
    """A small network in the loop: the exact eps of N(0.3, 0.5^2) data plus 0.1 x an untrained tiny UNet, so
    samples stay bounded (an untrained net alone sends x0_pred to ~600, where float32 cannot resolve 1e-5)."""

    def __init__(self, schedule):
        super().__init__()
        self.exact = GaussianEps(schedule, mu=0.3, s=0.5)
        torch.manual_seed(0)
        self.net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn=False).eval()

    def forward(self, x_t, t):
        return self.exact(x_t, t) + 0.1 * self.net(x_t, t)


def make_model(name, schedule):
    """(model, x_T) for a model name: a start of the right shape for it."""
    g = torch.Generator().manual_seed(0)
    if name == "toy":
        return ToyEps(schedule), torch.randn(4, 1, 8, 8, generator=g)
    if name == "small_net":
        return SmallNetEps(schedule), torch.randn(4, 1, 8, 8, generator=g)
    return ExactMixtureEps(schedule), torch.randn(256, 2, generator=g)


def diffusers_dpm(model, x, S, spacing="trailing", pairs=None, **overrides):
    """diffusers' DPMSolverMultistepScheduler on our alpha_bar table; returns the trajectory x_T, ..., x_0."""
    sched = DPMSolverMultistepScheduler(**{**COINCIDE, "timestep_spacing": spacing, **overrides})
    sched.alphas_cumprod = make_schedule("linear").alpha_bar.clone()  # our table; set_timesteps reads it
    if pairs is None:
        sched.set_timesteps(S)
    else:
        sched.set_timesteps(timesteps=[t for t, _ in pairs])
    trajectory = [x]
    for t in sched.timesteps:
        eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = sched.step(eps, t, x).prev_sample
        trajectory.append(x)
    return trajectory, sched.timesteps.tolist()


def max_gap(a, b):
    """Largest |difference| between two trajectories (lists of tensors of equal length)."""
    assert len(a) == len(b), (len(a), len(b))
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("S", [1, 3, 7, 10, 50, 333, 1000])
def test_diffusers_trailing_visits_our_trailing_timesteps(S):
    sched = DPMSolverMultistepScheduler(**COINCIDE, timestep_spacing="trailing")
    sched.set_timesteps(S)
    assert sched.timesteps.tolist() == [t for t, _ in make_timesteps(1000, S, "trailing")]


@pytest.mark.parametrize("model_name,S", [("toy", 3), ("toy", 5), ("toy", 10), ("toy", 20), ("toy", 50),
                                          ("toy", 100), ("mixture", 3), ("mixture", 10), ("mixture", 20),
                                          ("mixture", 50), ("small_net", 3), ("small_net", 10),
                                          ("small_net", 20)])
def test_matches_dpm_solver_multistep_scheduler(schedule, model_name, S):
    """Every state of the trajectory agrees to 1e-5 in float32; first-order DDIM does not (the test can tell)."""
    model, x_T = make_model(model_name, schedule)
    pairs = make_timesteps(1000, S, "trailing")
    theirs, _ = diffusers_dpm(model, x_T, S)
    _, ours = dpm_solver_sample(model, x_T, schedule, pairs, progress=False, return_trajectory=True)
    gap = max_gap(ours, theirs)
    assert gap < ATOL, f"{model_name}, S={S}: our trajectory differs from diffusers' by {gap:.1e}"
    ddim = ddim_sample(model, x_T, schedule, pairs, progress=False)
    assert (ddim - theirs[-1]).abs().max() > 1e-3, "DDIM must differ from 2M here, or the test cannot fail"


@pytest.mark.parametrize("S", [1, 2])
def test_one_or_two_steps_match_to_float32_rounding(schedule, S):
    """With S <= 2 there is no second-order step (first and last are first order), and the jump from t = 999
    divides by sqrt(abar_999) = 0.0064: 156 x float32 rounding, so the two agree to 1e-4 rather than 1e-5."""
    model, x_T = make_model("toy", schedule)
    theirs, _ = diffusers_dpm(model, x_T, S)
    _, ours = dpm_solver_sample(model, x_T, schedule, make_timesteps(1000, S, "trailing"), progress=False,
                                return_trajectory=True)
    assert max_gap(ours, theirs) < 1e-4


@pytest.mark.parametrize("spacing", ["leading", "linspace", "quad"])
@pytest.mark.parametrize("S", [5, 10, 50])
def test_other_spacings_match_with_explicit_timesteps(schedule, toy_eps, spacing, S):
    pairs = make_timesteps(1000, S, spacing)
    x_T = make_model("toy", schedule)[1]
    theirs, visited = diffusers_dpm(toy_eps, x_T, S, pairs=pairs)
    assert visited == [t for t, _ in pairs]
    _, ours = dpm_solver_sample(toy_eps, x_T, schedule, pairs, progress=False, return_trajectory=True)
    assert max_gap(ours, theirs) < ATOL


def test_final_step_options(schedule, toy_eps):
    """lower_order_final and euler_at_final change nothing for order 2 with a zero final sigma (the last step
    is first order anyway); final_sigmas_type="sigma_min" stops at abar[0] < 1, a different endpoint."""
    x_T = make_model("toy", schedule)[1]
    reference, _ = diffusers_dpm(toy_eps, x_T, 10)
    for overrides in [dict(lower_order_final=False), dict(euler_at_final=True)]:
        other, _ = diffusers_dpm(toy_eps, x_T, 10, **overrides)
        assert max_gap(reference, other) == 0.0, overrides
    sigma_min, _ = diffusers_dpm(toy_eps, x_T, 10, final_sigmas_type="sigma_min")
    assert (sigma_min[-1] - reference[-1]).abs().max() > 1e-3


def test_step_without_history_is_a_ddim_step(schedule64):
    """First order, DPM-Solver++ eq. (9) with x0_pred frozen, equals DDIM eq. (12) with eta = 0, last step included."""
    s = schedule64
    g = torch.Generator().manual_seed(0)
    x_t, eps = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    for t, t_prev in [(999, 899), (600, 550), (250, 0), (30, -1)]:
        ab_t, ab_prev = s.alpha_bar[t], (s.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
        ours = dpm_solver_step(predict_x0(eps, x_t, ab_t), x_t, ab_t, ab_prev)
        ddim = ddim_step(eps, x_t, ab_t, ab_prev, eta=0.0)
        assert torch.allclose(ours, ddim, rtol=0, atol=1e-12), (t, t_prev, (ours - ddim).abs().max())


def test_2m_step_is_algorithm_2(schedule64):
    """One 2M step against the paper's Algorithm 2 written out with torch (float64)."""
    s = schedule64
    g = torch.Generator().manual_seed(1)
    x_t, x0_pred, x0_pred_last = (torch.randn(2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t_last, t, t_prev = 700, 500, 420
    lam = {k: 0.5 * torch.log(s.alpha_bar[k] / (1 - s.alpha_bar[k])) for k in (t_last, t, t_prev)}
    h, h_last = lam[t_prev] - lam[t], lam[t] - lam[t_last]
    r = h_last / h
    D = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_last
    sigma = {k: (1 - s.alpha_bar[k]).sqrt() for k in (t, t_prev)}
    expected = sigma[t_prev] / sigma[t] * x_t - s.alpha_bar[t_prev].sqrt() * (torch.exp(-h) - 1) * D
    ours = dpm_solver_step(x0_pred, x_t, s.alpha_bar[t], s.alpha_bar[t_prev], x0_pred_last, s.alpha_bar[t_last])
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-12)
    first_order = dpm_solver_step(x0_pred, x_t, s.alpha_bar[t], s.alpha_bar[t_prev])
    assert (ours - first_order).abs().max() > 1e-3, "the history must change the step"


@pytest.mark.parametrize("spacing", ["trailing", "linspace", "quad"])
def test_first_step_is_ddim_and_the_second_is_not(schedule64, spacing):
    model = ToyEps(schedule64)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pairs = make_timesteps(1000, 10, spacing)
    _, ours = dpm_solver_sample(model, x_T, schedule64, pairs, progress=False, return_trajectory=True)
    _, ddim = ddim_sample(model, x_T, schedule64, pairs, progress=False, return_trajectory=True)
    assert (ours[1] - ddim[1]).abs().max() < 1e-12, "the first step has no history: it must be DDIM (eta = 0)"
    (t, t_prev) = pairs[1]
    ddim_from_ours = ddim_step(model(ours[1], torch.full((3,), t)), ours[1], schedule64.alpha_bar[t],
                               schedule64.alpha_bar[t_prev])
    assert (ours[2] - ddim_from_ours).abs().max() > 1e-4, "the second step must use the history (2M)"
    first_order = dpm_solver_sample(model, x_T, schedule64, pairs, order=1, progress=False)
    assert (first_order - ddim[-1]).abs().max() < 1e-12, "order=1 must be DDIM with eta = 0 throughout"


def test_last_step_returns_x0_pred(schedule64):
    model = GaussianEps(schedule64)
    x_T = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pairs = make_timesteps(1000, 7, "trailing")
    x0, trajectory = dpm_solver_sample(model, x_T, schedule64, pairs, progress=False, return_trajectory=True)
    t_last = pairs[-1][0]
    x_t = trajectory[-2]
    tweedie = predict_x0(model(x_t, torch.full((8,), t_last)), x_t, schedule64.alpha_bar[t_last])
    assert torch.allclose(x0, tweedie, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_exact_when_x0_pred_is_constant(schedule64, order):
    """Point-mass data x_0 = mu: x0_pred = mu all along the path, so the exponential integrator is exact at every
    step, x_t = sqrt(abar_t) mu + sqrt(1 - abar_t) z, for any grid and either order (a wrong linear part fails)."""
    mu = 0.7
    model = GaussianEps(schedule64, mu=mu, s=0.0)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab = schedule64.alpha_bar
    pairs = make_timesteps(1000, 6, "linspace")
    x_T = ab[999].sqrt() * mu + (1 - ab[999]).sqrt() * z
    _, trajectory = dpm_solver_sample(model, x_T, schedule64, pairs, order=order, progress=False,
                                      return_trajectory=True)
    for (t, t_prev), x in zip(pairs, trajectory[1:]):
        ab_prev = ab[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        exact = ab_prev.sqrt() * mu + (1 - ab_prev).sqrt() * z
        assert (x - exact).abs().max() < 1e-10, f"step {t} -> {t_prev} is off by {(x - exact).abs().max():.1e}"


def lambda_uniform_timesteps(schedule, S, t_end):
    """About S timesteps from t = T-1 down to t_end, evenly spaced in lambda (each rounded to the nearest
    integer t, duplicates dropped), then the jump to abar = 1: pairs for the samplers."""
    lam = np.array([lambda_from_alpha_bar(a) for a in schedule.alpha_bar])  # (T,), decreasing in t
    targets = np.linspace(lam[-1], lam[t_end], S)
    ts = sorted({int(np.abs(lam - target).argmin()) for target in targets}, reverse=True)
    return list(zip(ts, ts[1:] + [-1]))


def test_second_order_convergence_on_gaussian_data(schedule64):
    """Data N(mu, s^2): the probability-flow ODE keeps z = (x_t - sqrt(abar) mu) / sqrt(abar s^2 + 1 - abar)
    fixed, so x_t is known in closed form at every t. Measured at t_end = 10 (before the shared final jump to
    abar = 1) on lambda-uniform grids: doubling the steps divides DDIM's error by ~2 and 2M's by ~4.
    (We stop at t = 10 because near t = 0 the integer grid cannot be refined: lambda(0) - lambda(1) = 0.39.)"""
    mu, s, t_end = 0.5, 0.3, 10
    model = GaussianEps(schedule64, mu, s)
    ab = schedule64.alpha_bar
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = (x_T - ab[999].sqrt() * mu) / (ab[999] * s**2 + 1 - ab[999]).sqrt()
    exact = ab[t_end].sqrt() * mu + (ab[t_end] * s**2 + 1 - ab[t_end]).sqrt() * z
    errors = {1: [], 2: []}
    for S in [40, 80, 160]:
        pairs = lambda_uniform_timesteps(schedule64, S, t_end)
        assert pairs[0][0] == 999 and pairs[-1][0] == t_end
        for order in (1, 2):
            _, trajectory = dpm_solver_sample(model, x_T, schedule64, pairs, order=order, progress=False,
                                              return_trajectory=True)
            errors[order].append((trajectory[-2] - exact).abs().max().item())
    rates = {order: [math.log2(a / b) for a, b in zip(e, e[1:])] for order, e in errors.items()}
    assert all(0.9 < p < 1.1 for p in rates[1]), f"DDIM should converge at order 1: {rates[1]} ({errors[1]})"
    assert all(p > 1.7 for p in rates[2]), f"2M should converge at order 2: {rates[2]} ({errors[2]})"
    assert all(e2 < e1 / 10 for e1, e2 in zip(errors[1], errors[2])), "2M should be far ahead of DDIM here"


def test_clip_x0_clamps_every_x0_pred(schedule, toy_eps):
    x_T = 3 * make_model("toy", schedule)[1]  # far from the data, so x0_pred leaves [-1, 1]
    pairs = make_timesteps(1000, 10, "trailing")
    clipped = dpm_solver_sample(toy_eps, x_T, schedule, pairs, clip_x0=True, progress=False)
    unclipped = dpm_solver_sample(toy_eps, x_T, schedule, pairs, progress=False)
    assert clipped.abs().max() <= 1.0 < unclipped.abs().max(), "the last step returns x0_pred, clamped"
    x, x0_pred_last, ab_last = x_T, None, None  # the same loop by hand: clamp, then step and keep the history
    for t, t_prev in pairs:
        ab_t = schedule.alpha_bar[t].item()
        ab_prev = schedule.alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
        x0_pred = predict_x0(toy_eps(x, torch.full((x.shape[0],), t)), x, ab_t).clamp(-1, 1)
        x = dpm_solver_step(x0_pred, x, ab_t, ab_prev, x0_pred_last, ab_last)
        x0_pred_last, ab_last = x0_pred, ab_t
    assert (clipped - x).abs().max() < ATOL


def test_keeps_dtype_and_is_exported(schedule64, toy_eps):
    import course_lib
    assert course_lib.dpm_solver_sample is dpm_solver_sample and "dpm_solver_sample" in course_lib.__all__
    x = dpm_solver_sample(ToyEps(schedule64), torch.randn(2, 1, 4, 4, dtype=torch.float64), schedule64,
                          make_timesteps(1000, 5), progress=False)
    assert x.dtype == torch.float64


def test_bad_arguments_teach(schedule, toy_eps):
    x = torch.randn(2, 1, 4, 4)

    def sample(timesteps, **kw):
        return dpm_solver_sample(toy_eps, x, schedule, timesteps, progress=False, **kw)
    with pytest.raises(ValueError, match="timesteps is empty"):
        sample([])
    with pytest.raises(ValueError, match=r"t=1000 is outside \[0, 1000\)"):
        sample([(1000, -1)])
    with pytest.raises(ValueError, match="must go down in t"):
        sample([(500, 600), (600, -1)])
    with pytest.raises(ValueError, match="ends at t_prev=500 but the next step starts at 400"):
        sample([(900, 500), (400, -1)])
    with pytest.raises(ValueError, match="order=3 must be 1"):
        sample(make_timesteps(1000, 10), order=3)
    ab = schedule.alpha_bar
    with pytest.raises(ValueError, match="pass x0_pred_last and alpha_bar_last together"):
        dpm_solver_step(x, x, ab[500], ab[400], x0_pred_last=x)
    with pytest.raises(ValueError, match="the history must come from the previous, noisier step"):
        dpm_solver_step(x, x, ab[500], ab[400], x0_pred_last=x, alpha_bar_last=ab[400])
    with pytest.raises(ValueError, match="a sampling step must go to less noise"):
        dpm_solver_step(x, x, ab[400], ab[500])
    with pytest.raises(ValueError, match="alpha_bar_t=1 is the clean data"):
        dpm_solver_step(x, x, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"alpha_bar_prev=1.5 must lie in \(0, 1\]"):
        dpm_solver_step(x, x, ab[500], 1.5)
    with pytest.raises(ValueError, match="x0_pred has shape"):
        dpm_solver_step(x[:1], x, ab[500], ab[400])
    with pytest.raises(ValueError, match="x0_pred_last has shape"):
        dpm_solver_step(x, x, ab[500], ab[400], x0_pred_last=x[:1], alpha_bar_last=ab[600])
