"""Checks that Assignment 1's autograder cells call: each compares a student's function to `course_lib`.

Every reference value is computed here with `course_lib`, never with anything from the student's
namespace, on fresh inputs the check makes itself. `hidden=False` runs the visible checks (the common
mistakes, caught early); `hidden=True` runs the ones that decide the grade: other shapes, schedules,
seeds and dtypes. A failed check raises AssertionError with a message that says what to look at.

Tolerances. The reference is computed in float64 from the very `betas` and `alpha_bar` the student's function
gets (upcast), so a correct float32 implementation differs from it only by float32 rounding (~1e-6 relative);
the tolerance is 1e-4 for float32 inputs and 1e-8 for float64. Besides the course's schedules the checks use a
coarse one (T = 10, betas from 0.05 to 0.4), where abar_t and abar_{t-1}, or beta_t and beta_tilde_t, differ
by far more than any tolerance.
"""
import torch
import torch.nn.functional as F

from course_lib import ddpm, forward, schedules
from course_lib.mlp import MLPDenoiser

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def _tol(dtype):
    if dtype not in TOL:
        raise AssertionError(f"got dtype {dtype}; the tensors here should be float32 or float64")
    return TOL[dtype]


def _max_err(actual, expected):
    """Largest |actual - expected| / (1 + |expected|), compared in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).abs() / (1 + expected.abs())).max().item()


def _as_tensor(out, name, shape, dtype):
    if not torch.is_tensor(out):
        raise AssertionError(f"{name} should return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise AssertionError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise AssertionError(f"{name} returned dtype {out.dtype}, expected {dtype} (keep the inputs' dtype)")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{name} returned NaN or inf values")
    return out


def _call(name, fn, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(f"{name} is not implemented yet") from None
    except Exception as e:
        raise AssertionError(f"{name} raised {type(e).__name__}: {e}") from e


def _schedule(name, T, dtype):
    """A NoiseSchedule in `dtype`: 'linear' or 'cosine' from course_lib, or 'coarse' (T steps, betas 0.05 to 0.4)."""
    if name != "coarse":
        return schedules.make_schedule(name, T, dtype=dtype)
    return schedules.schedule_from_betas(schedules.linear_betas(T, 0.05, 0.4)).to(dtype=dtype)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --- schedules ------------------------------------------------------------------------------------------------

def check_linear_betas(linear_betas, hidden=False):
    """linear_betas(T, beta_start, beta_end) equals course_lib.schedules.linear_betas (float64, (T,))."""
    cases = [(1000, 1e-4, 0.02)] if not hidden else [(10, 1e-3, 0.05), (1, 1e-4, 0.02), (257, 2e-4, 0.03)]
    for T, beta_start, beta_end in cases:
        expected = schedules.linear_betas(T, beta_start, beta_end)
        out = _as_tensor(_call("linear_betas", linear_betas, T, beta_start, beta_end), "linear_betas",
                         (T,), torch.float64)
        err = _max_err(out, expected)
        if T > 1 and (abs(out[0].item() - beta_start) > 1e-12 or abs(out[-1].item() - beta_end) > 1e-12):
            raise AssertionError(f"linear_betas(T={T}) runs from {out[0].item():.6g} to {out[-1].item():.6g}; "
                                 f"betas[0] must be beta_start={beta_start} and betas[T-1] beta_end={beta_end}")
        assert err < 1e-12, (f"linear_betas(T={T}, {beta_start}, {beta_end}) differs from the reference by "
                             f"{err:.2g}; the T values are evenly spaced, both ends included")


def check_cosine_betas(cosine_betas, hidden=False):
    """cosine_betas(T, s, max_beta) equals course_lib.schedules.cosine_betas, clipping included."""
    cases = [(1000, 0.008, 0.999)] if not hidden else [(50, 0.008, 0.999), (200, 0.02, 0.5), (7, 0.008, 0.999)]
    for T, s, max_beta in cases:
        expected = schedules.cosine_betas(T, s, max_beta)
        out = _as_tensor(_call("cosine_betas", cosine_betas, T, s, max_beta), "cosine_betas", (T,), torch.float64)
        if out.max().item() > max_beta + 1e-12:
            raise AssertionError(f"cosine_betas(T={T}) has a beta of {out.max().item():.6g} > max_beta={max_beta}: "
                                 f"clip every beta at max_beta (alpha_bar(T) is ~0, so the last beta is ~1)")
        diff = (out - expected).abs()
        t = int(diff.argmax())
        assert diff[t].item() < 1e-10, (
            f"cosine_betas(T={T}, s={s}) differs from the reference by {diff[t].item():.3g} at t={t} "
            f"(got {out[t].item():.6g}, expected {expected[t].item():.6g}); beta_t = 1 - f(t+1)/f(t) with "
            f"f(u) = cos^2((u/T + s)/(1 + s) * pi/2) and 0-based t")


def check_alpha_bar_from_betas(alpha_bar_from_betas, hidden=False):
    """alpha_bar_from_betas(betas) is the cumulative product of alpha_t = 1 - beta_t."""
    cases = [("linear", 1000, torch.float64)] if not hidden else [
        ("cosine", 100, torch.float64), ("linear", 30, torch.float32), ("cosine", 1, torch.float32)]
    for name, T, dtype in cases:
        sched = _schedule(name, T, dtype)
        out = _as_tensor(_call("alpha_bar_from_betas", alpha_bar_from_betas, sched.betas.clone()),
                         "alpha_bar_from_betas", (T,), dtype)
        expected = torch.cumprod(1 - sched.betas.double(), 0)
        if T > 1 and out[-1].item() > out[0].item() + 1e-6:
            raise AssertionError("alpha_bar grows with t; alpha_bar_t = prod_{s<=t} (1 - beta_s) shrinks: "
                                 "a cumulative product (torch.cumprod), not a sum")
        err = _max_err(out, expected)
        assert err < (1e-12 if dtype == torch.float64 else 1e-5), (
            f"alpha_bar_from_betas differs from the reference by {err:.2g} ({name} schedule, T={T}); "
            f"alpha_bar[0] = 1 - betas[0], alpha_bar[t] = alpha_bar[t-1] * (1 - betas[t])")


# --- forward process and loss -------------------------------------------------------------------------------

def check_q_sample(q_sample, hidden=False):
    """q_sample(x0, t, noise, alpha_bar) equals course_lib.forward.add_noise (DDPM eq. 4)."""
    cases = [("linear", 1000, (8, 2), torch.float32, 0)] if not hidden else [
        ("cosine", 500, (6, 1, 4, 4), torch.float64, 1), ("linear", 50, (5, 3), torch.float32, 2)]
    for name, T, shape, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        g = _gen(seed)
        x0 = torch.randn(shape, generator=g, dtype=dtype)
        noise = torch.randn(shape, generator=g, dtype=dtype)
        t = torch.randint(0, T, (shape[0],), generator=g)
        t[0], t[1] = 0, T - 1
        expected = forward.add_noise(x0, t, noise, sched)
        out = _as_tensor(_call("q_sample", q_sample, x0.clone(), t.clone(), noise.clone(), sched.alpha_bar.clone()),
                         "q_sample", shape, dtype)
        per_sample = ((out - expected).abs().reshape(shape[0], -1).max(1).values
                      / (1 + expected.abs().reshape(shape[0], -1).max(1).values))
        i = int(per_sample.argmax())
        hint = ""
        abar = sched.alpha_bar.double()[t].reshape(-1, *[1] * (len(shape) - 1))
        if _max_err(out, abar.sqrt() * x0 + (1 - abar) * noise) < 1e-4:
            hint = "; the noise is scaled by sqrt(1 - alpha_bar_t), not (1 - alpha_bar_t)"
        elif _max_err(out, abar * x0 + (1 - abar).sqrt() * noise) < 1e-4:
            hint = "; x0 is scaled by sqrt(alpha_bar_t), not alpha_bar_t"
        elif t[i].item() < T - 1 and _max_err(out[i], forward.add_noise(x0[i:i + 1], t[i:i + 1] + 1, noise[i:i + 1],
                                                                         sched)[0]) < 1e-4:
            hint = "; index alpha_bar with the 0-based t itself, not t + 1"
        else:
            hint = "; x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, one alpha_bar_t per sample"
        assert per_sample[i].item() < _tol(dtype) * 1e-2, (
            f"q_sample differs from the reference by {per_sample[i].item():.2g} at t={t[i].item()} "
            f"({name} schedule, T={T}, x0 of shape {shape}, {dtype}){hint}")


def _small_model(data_dim, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPDenoiser(data_dim=data_dim, hidden_dim=32, num_layers=2, time_dim=16)


def check_l_simple(l_simple, hidden=False):
    """l_simple(model, x0, alpha_bar, t, noise) equals mean((noise - model(x_t, t))^2), DDPM eq. (14)."""
    cases = [("linear", 1000, 16, 2, torch.float32, 0)] if not hidden else [
        ("cosine", 300, 9, 3, torch.float32, 1), ("linear", 100, 4, 5, torch.float64, 2)]
    for name, T, B, D, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        model = _small_model(D, seed).to(dtype)
        g = _gen(seed)
        x0 = torch.randn(B, D, generator=g, dtype=dtype)
        noise = torch.randn(B, D, generator=g, dtype=dtype)
        t = torch.randint(0, T, (B,), generator=g)
        expected = F.mse_loss(model(forward.add_noise(x0, t, noise, sched), t), noise)
        out = _call("l_simple", l_simple, model, x0.clone(), sched.alpha_bar.clone(), t.clone(), noise.clone())
        if not torch.is_tensor(out) or out.dim() != 0:
            raise AssertionError(f"l_simple should return a 0-dim tensor (one number for the batch), got "
                                 f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
        if not out.requires_grad:
            raise AssertionError("l_simple's result has no gradient: return the loss tensor itself (no .item(), "
                                 "no torch.no_grad()) so that loss.backward() can train the model")
        ratio = out.item() / expected.item()
        hint = "; L_simple = mean over all elements of (noise - eps_pred)^2, with x_t from q_sample"
        if abs(ratio - B * D) < 1e-3 * B * D or abs(ratio - B) < 1e-3 * B:
            hint = "; average the squared error (mean), do not sum it"
        elif abs(out.item() - F.mse_loss(model(x0, t), noise).item()) < 1e-6:
            hint = "; feed the model the noisy x_t = q_sample(x0, t, noise, alpha_bar), not x0"
        err = abs(out.item() - expected.item()) / (1 + expected.item())
        assert err < _tol(dtype) * 1e-2, (f"l_simple = {out.item():.6g}, expected {expected.item():.6g} ({name} "
                                          f"schedule, T={T}, batch of {B} points in {D}-D, {dtype}){hint}")


# --- reverse process ----------------------------------------------------------------------------------------

def _step_times(T):
    return sorted({0, 1, T // 2, T - 1})


def _step_cases(hidden):
    """(name, T, shape, dtype, schedule, float64 reference schedule, generator) for the one-step checks."""
    cases = [("linear", 1000, (8, 2), torch.float32, 0), ("coarse", 10, (8, 2), torch.float32, 0)] if not hidden else [
        ("cosine", 400, (3, 1, 4, 4), torch.float64, 1), ("linear", 60, (5, 3), torch.float32, 2),
        ("coarse", 12, (4, 1, 2, 2), torch.float64, 3)]
    for name, T, shape, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        yield name, T, shape, dtype, sched, schedules.schedule_from_betas(sched.betas, alpha_bar=sched.alpha_bar), _gen(seed)


def check_posterior_mean_variance(posterior_mean_variance, hidden=False):
    """posterior_mean_variance(x0, x_t, t, betas, alpha_bar) equals DDPM eq. (7) with beta_tilde_t."""
    for name, T, shape, dtype, sched, ref, g in _step_cases(hidden):
        x0 = torch.randn(shape, generator=g, dtype=dtype)
        x_t = torch.randn(shape, generator=g, dtype=dtype)
        for t in _step_times(T):
            out = _call("posterior_mean_variance", posterior_mean_variance, x0.clone(), x_t.clone(), t,
                        sched.betas.clone(), sched.alpha_bar.clone())
            if not isinstance(out, tuple) or len(out) != 2:
                raise AssertionError("posterior_mean_variance should return a pair (mean, variance)")
            mean = _as_tensor(out[0], "posterior_mean_variance's mean", shape, dtype)
            variance = torch.as_tensor(out[1]).double()
            if variance.numel() != 1:
                raise AssertionError(f"the variance should be one number for step t (a 0-dim tensor), got shape "
                                     f"{tuple(variance.shape)}")
            expected_var = ddpm.posterior_variance(t, ref).item()
            where = f"at t={t} ({name} schedule, T={T}, {dtype})"
            var_err = abs(variance.item() - expected_var) / (expected_var + 1e-6)
            if var_err > _tol(dtype):
                hint = "; the posterior variance is beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t"
                if abs(variance.item() - ref.betas[t].item()) < 1e-6 * (1 + ref.betas[t].item()):
                    hint = ("; that is beta_t (DDPM's 'fixed large' choice); use beta_tilde_t = "
                            "(1 - abar_{t-1}) / (1 - abar_t) * beta_t")
                elif t == 0:
                    hint = "; at t = 0, abar_{t-1} is 1 (no noise before step 0), so beta_tilde_0 = 0"
                raise AssertionError(f"posterior variance is {variance.item():.6g}, expected {expected_var:.6g} "
                                     f"{where}{hint}")
            expected_mean = ddpm.posterior_mean(x0.double(), x_t.double(), t, ref)
            err = _max_err(mean, expected_mean)
            assert err < _tol(dtype), (
                f"posterior mean differs from the reference by {err:.2g} {where}; mean = sqrt(abar_{{t-1}}) beta_t "
                f"/ (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{{t-1}}) / (1 - abar_t) x_t, with abar_{{t-1}} = "
                f"alpha_bar[t-1] (1.0 at t = 0)")


def _ddpm_step_ref(eps_pred, x_t, t, ref, noise):
    return ddpm.ddpm_step(eps_pred.double(), x_t.double(), t, ref, "fixed_small",
                          None if noise is None else noise.double())


def check_ddpm_step(ddpm_step, hidden=False):
    """ddpm_step(eps_pred, x_t, t, betas, alpha_bar, noise) equals course_lib.ddpm.ddpm_step (fixed small)."""
    for name, T, shape, dtype, sched, ref, g in _step_cases(hidden):
        eps_pred = torch.randn(shape, generator=g, dtype=dtype)
        x_t = torch.randn(shape, generator=g, dtype=dtype)
        noise = torch.randn(shape, generator=g, dtype=dtype)
        for t in _step_times(T):
            z = noise if t > 0 else None
            where = f"at t={t} ({name} schedule, T={T}, {dtype})"
            try:
                out = ddpm_step(eps_pred.clone(), x_t.clone(), t, sched.betas.clone(), sched.alpha_bar.clone(),
                                None if z is None else z.clone())
            except NotImplementedError:
                raise AssertionError("ddpm_step is not implemented yet") from None
            except TypeError as e:
                if t == 0:
                    raise AssertionError(f"ddpm_step(..., t=0, noise=None) raised TypeError: {e}. The last step "
                                         f"t = 0 adds no noise: return the mean without touching `noise`") from None
                raise
            out = _as_tensor(out, "ddpm_step", shape, dtype)
            expected = _ddpm_step_ref(eps_pred, x_t, t, ref, z)
            err = _max_err(out, expected)
            if err < _tol(dtype):
                continue
            hint = ("; x0_pred = (x_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t) (DDPM eq. 15), then the "
                    "posterior mean of eq. (7), plus sqrt(beta_tilde_t) * noise for t > 0")
            tol = _tol(dtype)
            mean_only = expected - (ddpm.posterior_variance(t, ref).sqrt() * noise.double() if t > 0 else 0)
            x0_alpha = (x_t.double() - (1 - ref.alphas[t]).sqrt() * eps_pred.double()) / ref.alphas[t].sqrt()
            if _max_err(out, ddpm.posterior_mean(x0_alpha, x_t.double(), t, ref)
                        + (ddpm.posterior_variance(t, ref).sqrt() * noise.double() if t > 0 else 0)) < tol:
                hint = "; x0_pred uses alpha_bar_t (the cumulative product), not alpha_t"
            elif t > 0 and _max_err(out, ddpm.ddpm_step(eps_pred.double(), x_t.double(), t, ref, "fixed_large",
                                                        noise.double())) < tol:
                hint = "; the noise is scaled by sqrt(beta_tilde_t) (fixed small), not sqrt(beta_t)"
            elif t > 0 and _max_err(out, mean_only) < tol:
                hint = "; for t > 0 add sqrt(beta_tilde_t) * noise to the mean"
            elif t > 0 and _max_err(out, mean_only + ddpm.posterior_variance(t, ref) * noise.double()) < tol:
                hint = "; scale the noise by the standard deviation sqrt(beta_tilde_t), not the variance"
            raise AssertionError(f"ddpm_step differs from the reference by {err:.2g} {where}{hint}")


def _gaussian_eps(alpha_bar, mu=0.0, s=0.5, calls=None):
    """The exact eps-model for data x0 ~ N(mu, s^2 I): eps*(x_t, t) = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mu) / var_t.

    var_t = abar_t s^2 + 1 - abar_t. It checks how it is called (t a LongTensor (B,) inside [0, T)) and, when
    `calls` is a list, records each call's t so a check can say which timesteps a sampler visited.
    """
    T = alpha_bar.shape[0]
    alpha_bar = alpha_bar.double()

    def model(x_t, t):
        if not torch.is_tensor(t) or t.dtype != torch.long or t.shape != (x_t.shape[0],):
            raise AssertionError(f"call the model as model(x_t, t) with t a LongTensor of shape (B,) = "
                                 f"({x_t.shape[0]},), e.g. torch.full((B,), t, dtype=torch.long); got "
                                 f"{t.dtype if torch.is_tensor(t) else type(t).__name__} "
                                 f"{tuple(t.shape) if torch.is_tensor(t) else ''}")
        if calls is not None:
            calls.append(int(t[0]))
        if int(t.min()) < 0 or int(t.max()) >= T:
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise AssertionError(f"the model was called at t={bad}, outside [0, {T}): the model only knows the "
                                 f"0-based training steps; t_prev = -1 stands for abar = 1 and is never a model time")
        abar = alpha_bar[t].reshape(-1, *[1] * (x_t.dim() - 1))  # (B, 1, ..., 1)
        var_t = abar * s**2 + 1 - abar
        return ((1 - abar).sqrt() * (x_t.double() - abar.sqrt() * mu) / var_t).to(x_t.dtype)

    return model


def _gaussian_eps_model(alpha_bar, data_std=0.5):
    """The exact eps-prediction for data ~ N(0, data_std^2 I): sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t)."""
    return _gaussian_eps(alpha_bar, mu=0.0, s=data_std)


def check_ddpm_sample(ddpm_sample, hidden=False):
    """ddpm_sample(model, x_T, betas, alpha_bar, generator) equals course_lib.ddpm.ddpm_sample, noise draw for draw."""
    cases = [("linear", 100, (64, 2), torch.float32, 0), ("coarse", 10, (64, 2), torch.float32, 0)] if not hidden else [
        ("cosine", 150, (4, 1, 3, 3), torch.float64, 1), ("linear", 200, (32, 3), torch.float32, 2),
        ("coarse", 10, (8, 1, 2, 2), torch.float64, 3)]
    for name, T, shape, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        model = _gaussian_eps_model(schedules.schedule_from_betas(sched.betas, alpha_bar=sched.alpha_bar).alpha_bar)
        x_T = torch.randn(shape, generator=_gen(seed + 100), dtype=dtype)
        ref = schedules.schedule_from_betas(sched.betas, alpha_bar=sched.alpha_bar).to(dtype=dtype)  # coefficients from the same inputs
        expected = ddpm.ddpm_sample(model, x_T.clone(), ref, "fixed_small", generator=_gen(seed), progress=False)
        calls = []

        def counting_model(x_t, t):
            calls.append(int(t[0]))
            return model(x_t, t)

        out = _call("ddpm_sample", ddpm_sample, counting_model, x_T.clone(), sched.betas.clone(),
                    sched.alpha_bar.clone(), _gen(seed))
        out = _as_tensor(out, "ddpm_sample", shape, dtype)
        where = f"({name} schedule, T={T}, x_T of shape {shape}, {dtype})"
        if calls != list(range(T - 1, -1, -1)):
            shown = calls[:3] + ["..."] + calls[-2:] if len(calls) > 5 else calls
            raise AssertionError(f"ddpm_sample called the model at t = {shown} {where}; it must visit every "
                                 f"t = T-1, ..., 0 once, in descending order")
        err = _max_err(out, expected)
        hint = ("; draw noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) once for each t > 0 "
                "(none at t = 0), in the loop's order, and pass it to ddpm_step (check ddpm_step first)")
        if dtype == torch.float64:
            hint += "; with float64 x_T the noise must be drawn with dtype=x.dtype"
        assert err < _tol(dtype), f"ddpm_sample differs from the reference by {err:.2g} {where}{hint}"


# --- integrity ----------------------------------------------------------------------------------------------------
# Every check_* above runs between two integrity checks: if code in the notebook replaced torch, course_lib or
# these checks, the replacement is undone and the check fails saying what was replaced (autograde_tests/integrity.py).
from autograde_tests import integrity as _integrity  # noqa: E402

_integrity.guard_checks(globals())
