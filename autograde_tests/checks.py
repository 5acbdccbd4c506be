"""Checks that Assignment 1's autograder cells call: each compares a student's function to `course_lib`.

Each check is a generator (autograde_tests/harness.py): it makes fresh inputs, yields a `Call` of the student's
function and receives its result, then computes the reference with `course_lib` in this process and compares. In a
student's kernel the call happens right there; while autograding the whole check runs in the grader and only the
call happens in the sandboxed kernel (autograde_tests/judge.py). `hidden=False` runs the visible checks (the common
mistakes, caught early); `hidden=True` runs the ones that decide the grade: other shapes, schedules, seeds and
dtypes. A failed check raises AssertionError with a message that says what to look at.

Tolerances, one principle (docs/instructor.md): a result is compared with the EXACT one, computed in float64 from
float64 inputs (the float64 schedule of the same name, never the float32 tables upcast), with a tolerance that
follows from the input dtype's precision and the conditioning of the quantity: `_tol(dtype)` is 1e-8 for float64
and 1e-4 for float32, and near t = 0, where 1 - abar_t ~ beta_0 ~ 1e-4 and a float32 table carries a relative error
of eps_32 / (1 - abar_t) in it, `_tol(dtype, schedule, t)` grows to 4 eps_32 / (1 - abar_t). So every algebraically
equivalent way of writing a formula (beta_t or 1 - alpha_t, abar_t or a cumulative product of the betas) passes
in every dtype, and the known mistakes, which change results by 1e-2 or more, do not. Besides the course's
schedules the checks use a coarse one (T = 10, betas from 0.05 to 0.4), where abar_t and abar_{t-1}, or beta_t and
beta_tilde_t, differ by far more than any tolerance.
"""
import torch
import torch.nn.functional as F

from autograde_tests.harness import Call, StudentRaised, check, salted, student_gen
from autograde_tests.kernel_side import GaussianEps, MLPModel
from course_lib import ddpm, forward, schedules
from course_lib.mlp import MLPDenoiser

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
EPS = {torch.float64: 2.0**-52, torch.float32: 2.0**-23}


def _tol(dtype, sched=None, t=None):
    """The tolerance for a result computed from `dtype` inputs; with (sched, t), widened near t = 0 (see above)."""
    if dtype not in TOL:
        raise AssertionError(f"got dtype {dtype}; the tensors here should be float32 or float64")
    if sched is None:
        return TOL[dtype]
    return max(TOL[dtype], 4 * EPS[dtype] / (1 - sched.alpha_bar.double()[t].item()))


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


def _schedule(name, T, dtype):
    """A NoiseSchedule in `dtype`: 'linear' or 'cosine' from course_lib, or 'coarse' (T steps, betas 0.05 to 0.4)."""
    if name != "coarse":
        return schedules.make_schedule(name, T, dtype=dtype)
    return schedules.schedule_from_betas(schedules.linear_betas(T, 0.05, 0.4)).to(dtype=dtype)


def _gen(seed):
    """A generator for the check's own inputs; seeds are offset by the grading run's salt (harness.SALT)."""
    return torch.Generator().manual_seed(salted(seed))


# --- schedules ------------------------------------------------------------------------------------------------

@check("linear_betas")
def check_linear_betas(hidden=False):
    """linear_betas(T, beta_start, beta_end) equals course_lib.schedules.linear_betas (float64, (T,); T = 1 gives
    [beta_start])."""
    cases = [(1000, 1e-4, 0.02)] if not hidden else [(10, 1e-3, 0.05), (1, 1e-4, 0.02), (257, 2e-4, 0.03)]
    for T, beta_start, beta_end in cases:
        expected = schedules.linear_betas(T, beta_start, beta_end)
        out = yield Call("linear_betas", T=T, beta_start=beta_start, beta_end=beta_end)
        out = _as_tensor(out, "linear_betas", (T,), torch.float64)
        err = _max_err(out, expected)
        if err >= 1e-12 and _max_err(out, expected.float()) < 1e-12:
            raise AssertionError(f"linear_betas(T={T}) has the values of a float32 computation (off by {err:.1g}) "
                                 f"although it returns {out.dtype}: create the tensor in float64 (dtype=torch.float64) "
                                 f"instead of casting a float32 one")
        if T > 1 and (abs(out[0].item() - beta_start) > 1e-12 or abs(out[-1].item() - beta_end) > 1e-12):
            raise AssertionError(f"linear_betas(T={T}) runs from {out[0].item():.6g} to {out[-1].item():.6g}; "
                                 f"betas[0] must be beta_start={beta_start} and betas[T-1] beta_end={beta_end}")
        assert err < 1e-12, (f"linear_betas(T={T}, {beta_start}, {beta_end}) differs from the reference by "
                             f"{err:.2g}; the T values are evenly spaced, both ends included")


@check("cosine_betas")
def check_cosine_betas(hidden=False):
    """cosine_betas(T, s, max_beta) equals course_lib.schedules.cosine_betas, clipping included."""
    cases = [(1000, 0.008, 0.999)] if not hidden else [(50, 0.008, 0.999), (200, 0.02, 0.5), (7, 0.008, 0.999)]
    for T, s, max_beta in cases:
        expected = schedules.cosine_betas(T, s, max_beta)
        out = yield Call("cosine_betas", T=T, s=s, max_beta=max_beta)
        out = _as_tensor(out, "cosine_betas", (T,), torch.float64)
        if out.max().item() > max_beta + 1e-12:
            raise AssertionError(f"cosine_betas(T={T}) has a beta of {out.max().item():.6g} > max_beta={max_beta}: "
                                 f"clip every beta at max_beta (alpha_bar(T) is ~0, so the last beta is ~1)")
        diff = (out - expected).abs()
        t = int(diff.argmax())
        assert diff[t].item() < 1e-10, (
            f"cosine_betas(T={T}, s={s}) differs from the reference by {diff[t].item():.3g} at t={t} "
            f"(got {out[t].item():.6g}, expected {expected[t].item():.6g}); beta_t = 1 - f(t+1)/f(t) with "
            f"f(u) = cos^2((u/T + s)/(1 + s) * pi/2) and 0-based t")


@check("alpha_bar_from_betas")
def check_alpha_bar_from_betas(hidden=False):
    """alpha_bar_from_betas(betas) is the cumulative product of alpha_t = 1 - beta_t."""
    cases = [("linear", 1000, torch.float64)] if not hidden else [
        ("cosine", 100, torch.float64), ("linear", 30, torch.float32), ("cosine", 1, torch.float32)]
    for name, T, dtype in cases:
        sched = _schedule(name, T, dtype)
        out = yield Call("alpha_bar_from_betas", betas=sched.betas.clone())
        out = _as_tensor(out, "alpha_bar_from_betas", (T,), dtype)
        expected = torch.cumprod(1 - sched.betas.double(), 0)
        if T > 1 and out[-1].item() > out[0].item() + 1e-6:
            raise AssertionError("alpha_bar grows with t; alpha_bar_t = prod_{s<=t} (1 - beta_s) shrinks: "
                                 "a cumulative product (torch.cumprod), not a sum")
        err = _max_err(out, expected)
        assert err < (1e-12 if dtype == torch.float64 else 1e-5), (
            f"alpha_bar_from_betas differs from the reference by {err:.2g} ({name} schedule, T={T}); "
            f"alpha_bar[0] = 1 - betas[0], alpha_bar[t] = alpha_bar[t-1] * (1 - betas[t])")


# --- forward process and loss -------------------------------------------------------------------------------

@check("q_sample")
def check_q_sample(hidden=False):
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
        out = yield Call("q_sample", x0=x0.clone(), t=t.clone(), noise=noise.clone(), alpha_bar=sched.alpha_bar.clone())
        out = _as_tensor(out, "q_sample", shape, dtype)
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


def _small_model(data_dim, seed, dtype):
    """A seeded MLPDenoiser (as plain weights, so the grading kernel can rebuild it) and the model itself."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(salted(seed))
        model = MLPDenoiser(data_dim=data_dim, hidden_dim=32, num_layers=2, time_dim=16).to(dtype)
    return MLPModel(model.config(), {k: v.detach().clone() for k, v in model.state_dict().items()}), model


@check("l_simple", depends=("check_q_sample",))
def check_l_simple(hidden=False):
    """l_simple(model, x0, alpha_bar, t, noise) equals mean((noise - model(x_t, t))^2), DDPM eq. (14)."""
    cases = [("linear", 1000, 16, 2, torch.float32, 0)] if not hidden else [
        ("cosine", 300, 9, 3, torch.float32, 1), ("linear", 100, 4, 5, torch.float64, 2)]
    for name, T, B, D, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        weights, model = _small_model(D, seed, dtype)
        g = _gen(seed)
        x0 = torch.randn(B, D, generator=g, dtype=dtype)
        noise = torch.randn(B, D, generator=g, dtype=dtype)
        t = torch.randint(0, T, (B,), generator=g)
        with torch.no_grad():
            expected = F.mse_loss(model(forward.add_noise(x0, t, noise, sched), t), noise)
            unnoised = F.mse_loss(model(x0, t), noise)
        out = yield Call("l_simple", model=weights, x0=x0.clone(), alpha_bar=sched.alpha_bar.clone(), t=t.clone(),
                         noise=noise.clone())
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
        elif abs(out.item() - unnoised.item()) < 1e-6:
            hint = "; feed the model the noisy x_t = q_sample(x0, t, noise, alpha_bar), not x0"
        err = abs(out.item() - expected.item()) / (1 + expected.item())
        assert err < _tol(dtype) * 1e-2, (f"l_simple = {out.item():.6g}, expected {expected.item():.6g} ({name} "
                                          f"schedule, T={T}, batch of {B} points in {D}-D, {dtype}){hint}")


# --- reverse process ----------------------------------------------------------------------------------------

def _step_times(T):
    return sorted({0, 1, T // 2, T - 1})


def _step_cases(hidden):
    """(name, T, shape, dtype, schedule, exact float64 schedule, generator) for the one-step checks."""
    cases = [("linear", 1000, (8, 2), torch.float32, 0), ("coarse", 10, (8, 2), torch.float32, 0)] if not hidden else [
        ("cosine", 400, (3, 1, 4, 4), torch.float64, 1), ("linear", 60, (5, 3), torch.float32, 2),
        ("coarse", 12, (4, 1, 2, 2), torch.float64, 3)]
    for name, T, shape, dtype, seed in cases:
        yield name, T, shape, dtype, _schedule(name, T, dtype), _schedule(name, T, torch.float64), _gen(seed)


@check("posterior_mean_variance")
def check_posterior_mean_variance(hidden=False):
    """posterior_mean_variance(x0, x_t, t, betas, alpha_bar) equals DDPM eq. (7) with beta_tilde_t."""
    for name, T, shape, dtype, sched, ref, g in _step_cases(hidden):
        x0 = torch.randn(shape, generator=g, dtype=dtype)
        x_t = torch.randn(shape, generator=g, dtype=dtype)
        for t in _step_times(T):
            out = yield Call("posterior_mean_variance", x0=x0.clone(), x_t=x_t.clone(), t=t, betas=sched.betas.clone(),
                             alpha_bar=sched.alpha_bar.clone())
            if not isinstance(out, tuple) or len(out) != 2:
                raise AssertionError("posterior_mean_variance should return a pair (mean, variance)")
            mean = _as_tensor(out[0], "posterior_mean_variance's mean", shape, dtype)
            if not torch.is_tensor(out[1]) and not isinstance(out[1], (int, float)):
                raise AssertionError(f"the variance should be one number for step t (a 0-dim tensor), got "
                                     f"{type(out[1]).__name__}")
            variance = torch.as_tensor(out[1]).double()
            if variance.numel() != 1:
                raise AssertionError(f"the variance should be one number for step t (a 0-dim tensor), got shape "
                                     f"{tuple(variance.shape)}")
            expected_var = ddpm.posterior_variance(t, ref).item()
            where = f"at t={t} ({name} schedule, T={T}, {dtype})"
            tol = _tol(dtype, ref, t)
            var_err = abs(variance.item() - expected_var) / (expected_var + 1e-6)
            if var_err > tol:
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
            assert err < tol, (
                f"posterior mean differs from the reference by {err:.2g} {where}; mean = sqrt(abar_{{t-1}}) beta_t "
                f"/ (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{{t-1}}) / (1 - abar_t) x_t, with abar_{{t-1}} = "
                f"alpha_bar[t-1] (1.0 at t = 0)")


def _ddpm_step_ref(eps_pred, x_t, t, ref, noise):
    return ddpm.ddpm_step(eps_pred.double(), x_t.double(), t, ref, "fixed_small",
                          None if noise is None else noise.double())


@check("ddpm_step", depends=("check_posterior_mean_variance",))
def check_ddpm_step(hidden=False):
    """ddpm_step(eps_pred, x_t, t, betas, alpha_bar, noise) equals course_lib.ddpm.ddpm_step (fixed small)."""
    for name, T, shape, dtype, sched, ref, g in _step_cases(hidden):
        eps_pred = torch.randn(shape, generator=g, dtype=dtype)
        x_t = torch.randn(shape, generator=g, dtype=dtype)
        noise = torch.randn(shape, generator=g, dtype=dtype)
        for t in _step_times(T):
            z = noise if t > 0 else None
            where = f"at t={t} ({name} schedule, T={T}, {dtype})"
            try:
                out = yield Call("ddpm_step", catch=True, eps_pred=eps_pred.clone(), x_t=x_t.clone(), t=t,
                                 betas=sched.betas.clone(), alpha_bar=sched.alpha_bar.clone(),
                                 noise=None if z is None else z.clone())
            except StudentRaised as e:
                if t == 0 and "TypeError" in e.mro:
                    raise AssertionError(f"ddpm_step(..., t=0, noise=None) raised TypeError: {e.message}. The last "
                                         f"step t = 0 adds no noise: return the mean without touching `noise`") from None
                raise AssertionError(f"ddpm_step raised {e.type_name}: {e.message} {where}") from None
            out = _as_tensor(out, "ddpm_step", shape, dtype)
            expected = _ddpm_step_ref(eps_pred, x_t, t, ref, z)
            err = _max_err(out, expected)
            tol = _tol(dtype, ref, t)
            if err < tol:
                continue
            hint = ("; x0_pred = (x_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t) (DDPM eq. 15), then the "
                    "posterior mean of eq. (7), plus sqrt(beta_tilde_t) * noise for t > 0")
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


def _gaussian_eps(alpha_bar, mu=0.0, s=0.5, record=False):
    """The exact eps-model for data x0 ~ N(mu, s^2 I) (kernel_side.GaussianEps), recording t when record=True."""
    return GaussianEps(alpha_bar, mu=mu, s=s, record=record)


def _ddpm_sample_exact(model, x_T, ref, seed):
    """course_lib's ddpm_sample in float64 on the exact schedule, with the noise drawn in x_T's dtype (as the
    student's sampler draws it: torch.randn in float32 and in float64 give different numbers)."""
    g, x = torch.Generator().manual_seed(seed), x_T.double()
    for t in range(ref.T - 1, -1, -1):
        eps_pred = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        noise = torch.randn(x.shape, generator=g, dtype=x_T.dtype).double() if t > 0 else None
        x = ddpm.ddpm_step(eps_pred, x, t, ref, "fixed_small", noise)
    return x


@check("ddpm_sample", depends=("check_ddpm_step",))
def check_ddpm_sample(hidden=False):
    """ddpm_sample(model, x_T, betas, alpha_bar, generator) equals course_lib.ddpm.ddpm_sample, noise draw for draw."""
    cases = [("linear", 100, (64, 2), torch.float32, 0), ("coarse", 10, (64, 2), torch.float32, 0)] if not hidden else [
        ("cosine", 150, (4, 1, 3, 3), torch.float64, 1), ("linear", 200, (32, 3), torch.float32, 2),
        ("coarse", 10, (8, 1, 2, 2), torch.float64, 3)]
    for name, T, shape, dtype, seed in cases:
        sched = _schedule(name, T, dtype)
        ref = _schedule(name, T, torch.float64)
        x_T = torch.randn(shape, generator=_gen(seed + 100), dtype=dtype)
        expected = _ddpm_sample_exact(_gaussian_eps(ref.alpha_bar), x_T, ref, salted(seed))
        model = _gaussian_eps(sched.alpha_bar, record=True)
        out = yield Call("ddpm_sample", model=model, x_T=x_T.clone(), betas=sched.betas.clone(),
                         alpha_bar=sched.alpha_bar.clone(), generator=student_gen(seed))
        out = _as_tensor(out, "ddpm_sample", shape, dtype)
        where = f"({name} schedule, T={T}, x_T of shape {shape}, {dtype})"
        calls = model.calls
        if calls != list(range(T - 1, -1, -1)):
            shown = calls[:3] + ["..."] + calls[-2:] if len(calls) > 5 else calls
            raise AssertionError(f"ddpm_sample called the model at t = {shown} {where}; it must visit every "
                                 f"t = T-1, ..., 0 once, in descending order")
        err = _max_err(out, expected)
        hint = ("; draw noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) once for each t > 0 "
                "(none at t = 0), in the loop's order, and pass it to ddpm_step (check ddpm_step first)")
        if dtype == torch.float64:
            hint += "; with float64 x_T the noise must be drawn with dtype=x.dtype"
        assert err < _tol(dtype, ref, 0), f"ddpm_sample differs from the reference by {err:.2g} {where}{hint}"
