"""Correct but different solutions: each must get full marks (issue: a grader is fair only if every correct way of
writing a function passes). name: (grade_id of the solution cell, the student's whole cell).

They differ from the course's solution in the ways students' code does: the paper's algorithm as printed, per-row
loops, other but equivalent formulas (beta_t or 1 - alpha_t, abar_t/abar_prev or 1 - beta), float64 arithmetic
cast back at the end, numpy instead of torch, while loops instead of for loops.
"""
A1 = {
    "linear-arange": ("linear_betas_solution", '''
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    if T == 1:
        return torch.tensor([beta_start], dtype=torch.float64)
    step = (beta_end - beta_start) / (T - 1)
    betas = beta_start + step * torch.arange(T, dtype=torch.float64)
    betas[-1] = beta_end
    return betas
'''),
    "cosine-vectorised": ("cosine_betas_solution", '''
def cosine_betas(T, s=0.008, max_beta=0.999):
    u = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)
'''),
    "alpha-bar-loop": ("alpha_bar_from_betas_solution", '''
def alpha_bar_from_betas(betas):
    out = torch.empty_like(betas)
    running = torch.ones((), dtype=betas.dtype)
    for t in range(betas.shape[0]):
        running = running * (1 - betas[t])
        out[t] = running
    return out
'''),
    "q-sample-per-row": ("q_sample_solution", '''
def q_sample(x0, t, noise, alpha_bar):
    rows = []
    for i in range(x0.shape[0]):
        a = alpha_bar[t[i]]
        rows.append(torch.sqrt(a) * x0[i] + torch.sqrt(1 - a) * noise[i])
    return torch.stack(rows)
'''),
    "l-simple-mse-loss": ("l_simple_solution", '''
def l_simple(model, x0, alpha_bar, t, noise):
    return F.mse_loss(model(q_sample(x0, t, noise, alpha_bar), t), noise)
'''),
    "posterior-one-minus-alpha": ("posterior_mean_variance_solution", '''
def posterior_mean_variance(x0, x_t, t, betas, alpha_bar):
    alphas = 1 - betas
    abar_prev = alpha_bar[t - 1] if t >= 1 else torch.tensor(1.0, dtype=alpha_bar.dtype)
    one_minus = 1 - alpha_bar[t]
    mean = (abar_prev.sqrt() * (1 - alphas[t]) * x0 + alphas[t].sqrt() * (1 - abar_prev) * x_t) / one_minus
    return mean, (1 - abar_prev) * (1 - alphas[t]) / one_minus
'''),
    "ddpm-step-algorithm-2": ("ddpm_step_solution", '''
def ddpm_step(eps_pred, x_t, t, betas, alpha_bar, noise=None):
    # DDPM's Algorithm 2 as printed: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z
    alpha_t = 1 - betas[t]
    mean = (x_t - betas[t] / (1 - alpha_bar[t]).sqrt() * eps_pred) / alpha_t.sqrt()
    if t == 0:
        return mean
    _, variance = posterior_mean_variance(x_t, x_t, t, betas, alpha_bar)
    return mean + variance.sqrt() * noise
'''),
    "ddpm-step-float64": ("ddpm_step_solution", '''
def ddpm_step(eps_pred, x_t, t, betas, alpha_bar, noise=None):
    b, ab = betas.double(), alpha_bar.double()
    x0_pred = (x_t.double() - (1 - ab[t]).sqrt() * eps_pred.double()) / ab[t].sqrt()
    if t == 0:
        return x0_pred.to(x_t.dtype)  # abar_prev = 1: the posterior mean is x0_pred itself
    mean, variance = posterior_mean_variance(x0_pred, x_t.double(), t, b, ab)
    return (mean + variance.sqrt() * noise.double()).to(x_t.dtype)
'''),
    "ddpm-sample-while": ("ddpm_sample_solution", '''
@torch.no_grad()
def ddpm_sample(model, x_T, betas, alpha_bar, generator=None):
    x, t = x_T.clone(), betas.shape[0] - 1
    while t >= 0:
        eps = model(x, t * torch.ones(x.shape[0], dtype=torch.long))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if t else None
        x = ddpm_step(eps, x, t, betas, alpha_bar, z)
        t -= 1
    return x
'''),
    "ddpm-sample-reversed": ("ddpm_sample_solution", '''
def ddpm_sample(model, x_T, betas, alpha_bar, generator=None):
    with torch.no_grad():
        x = x_T
        for t in reversed(range(len(betas))):
            eps = model(x, torch.tensor([t] * x.shape[0]))
            x = ddpm_step(eps, x, t, betas, alpha_bar,
                          torch.randn(x.shape, generator=generator, dtype=x.dtype) if t > 0 else None)
    return x
'''),
}

A2 = {
    "sigma-beta-form": ("ddim_sigma_solution", '''
def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (alpha_bar_prev - alpha_bar_t) / alpha_bar_prev
    return eta * torch.sqrt(variance)
'''),
    "weights-from-eq12": ("ddim_weights_solution", '''
def ddim_weights(alpha_bar_t, alpha_bar_prev, sigma_t):
    # eq. (12) with x0_hat in place of x_0, read off as weights of x_0 and x_t
    direction = torch.sqrt(1 - alpha_bar_prev - sigma_t * sigma_t)
    return (torch.sqrt(alpha_bar_prev) - direction * torch.sqrt(alpha_bar_t / (1 - alpha_bar_t)),
            direction / torch.sqrt(1 - alpha_bar_t))
'''),
    "weights-float64-list": ("ddim_weights_solution", '''
def ddim_weights(alpha_bar_t, alpha_bar_prev, sigma_t):
    a, p, s = alpha_bar_t.double(), alpha_bar_prev.double(), sigma_t.double()
    w_t = ((1 - p - s**2) / (1 - a)) ** 0.5
    return [(p**0.5 - a**0.5 * w_t).to(alpha_bar_t.dtype), w_t.to(alpha_bar_t.dtype)]
'''),
    "timesteps-numpy": ("make_timesteps_solution", '''
def make_timesteps(T, num_steps, spacing="leading"):
    S = num_steps
    i = np.arange(S)
    if spacing == "leading":
        ts = i * (T // S)
    elif spacing == "trailing":
        ts = np.round(T - i * (T / S)).astype(int) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, S)).astype(int)
    elif spacing == "quad":
        ts = np.maximum(i, (np.linspace(0, np.sqrt(0.8 * T), S) ** 2).astype(int))
    else:
        raise ValueError(spacing)
    ts = [int(t) for t in np.sort(ts)[::-1]]
    return [(ts[k], ts[k + 1] if k + 1 < S else -1) for k in range(S)]
'''),
    "ddim-step-expanded": ("ddim_step_solution", '''
def ddim_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
    x0 = (x_t - torch.sqrt(1 - alpha_bar_t) * eps_pred) / torch.sqrt(alpha_bar_t)
    x0 = torch.clamp(x0, -1, 1) if clip_x0 else x0
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    out = torch.sqrt(alpha_bar_prev) * x0 + torch.sqrt(1 - alpha_bar_prev - sigma * sigma) * eps_pred
    return out + sigma * noise if noise is not None and eta > 0 else out
'''),
    "ddim-step-float64": ("ddim_step_solution", '''
def ddim_step(eps_pred, x_t, alpha_bar_t, alpha_bar_prev, eta, noise=None, clip_x0=False):
    a, p, e, x = alpha_bar_t.double(), alpha_bar_prev.double(), eps_pred.double(), x_t.double()
    x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    sigma = eta * ((1 - p) / (1 - a)).sqrt() * (1 - a / p).sqrt()
    out = p.sqrt() * x0 + (1 - p - sigma**2).sqrt() * e
    if eta > 0:
        out = out + sigma * noise.double()
    return out.to(x_t.dtype)
'''),
    "ddim-sample-index-loop": ("ddim_sample_solution", '''
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    with torch.no_grad():
        x = x_T
        for k in range(len(timesteps)):
            t, t_prev = timesteps[k]
            eps = model(x, torch.full((len(x),), t))
            prev = alpha_bar[t_prev] if t_prev != -1 else alpha_bar.new_tensor(1.0)
            z = None if eta == 0 else torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = ddim_step(eps, x, alpha_bar[t], prev, eta, z)
        return x
'''),
    "ddim-invert-reversed-list": ("ddim_invert_solution", '''
def ddim_invert(model, x0, alpha_bar, timesteps):
    x = x0.clone()
    for t, t_prev in timesteps[::-1]:
        a_prev = torch.tensor(1.0, dtype=alpha_bar.dtype) if t_prev < 0 else alpha_bar[t_prev]
        with torch.no_grad():
            eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x0_pred = (x - torch.sqrt(1 - a_prev) * eps) / torch.sqrt(a_prev)
        x = torch.sqrt(alpha_bar[t]) * x0_pred + torch.sqrt(1 - alpha_bar[t]) * eps
    return x
'''),
    "reconstruction-mse-loss": ("reconstruction_mse_solution", '''
def reconstruction_mse(model, x0, alpha_bar, timesteps):
    x_rec = ddim_sample(model, ddim_invert(model, x0, alpha_bar, timesteps), alpha_bar, timesteps, 0.0)
    return float(torch.nn.functional.mse_loss(x_rec, x0))
'''),
    "slerp-normalised": ("slerp_solution", '''
def slerp(z0, z1, lam):
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a / a.norm(dim=1, keepdim=True) * b / b.norm(dim=1, keepdim=True)).sum(1, keepdim=True)
    theta = torch.acos(torch.clamp(cos, -1.0, 1.0))
    s = torch.sin(theta)
    safe = torch.where(s > 1e-6, s, torch.ones_like(s))
    out = torch.where(s > 1e-6, (torch.sin((1 - lam) * theta) * a + torch.sin(lam * theta) * b) / safe,
                      (1 - lam) * a + lam * b)
    return out.view_as(z0)
'''),
    "slerp-per-row": ("slerp_solution", '''
def slerp(z0, z1, lam):
    rows = []
    for a, b in zip(z0, z1):
        a, b = a.flatten(), b.flatten()
        theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))
        if torch.sin(theta) < 1e-6:
            rows.append((1 - lam) * a + lam * b)
        else:
            rows.append((torch.sin((1 - lam) * theta) * a + torch.sin(lam * theta) * b) / torch.sin(theta))
    return torch.stack(rows).reshape(z0.shape)
'''),
    "ddim-sample-trajectory-list": ("ddim_sample_solution", '''
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    xs = [x_T]
    ones = torch.ones((), dtype=alpha_bar.dtype)
    for t, t_prev in list(timesteps):
        eps = model(xs[-1], torch.full((x_T.shape[0],), t, dtype=torch.long))
        noise = torch.randn(x_T.shape, generator=generator, dtype=x_T.dtype) if eta > 0 else None
        xs.append(ddim_step(eps, xs[-1], alpha_bar[t], alpha_bar[t_prev] if t_prev >= 0 else ones, eta, noise))
    return xs[-1]
'''),
}


def packs(variants):
    """The variants grouped into as few notebooks as possible, each solution cell replaced at most once per pack."""
    groups = []
    for name, (grade_id, _) in variants.items():
        for group in groups:
            if grade_id not in {variants[n][0] for n in group}:
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def with_variants(solution, variants, names):
    """A copy of the solution notebook with the named variants' cells in place of the solution's."""
    import copy

    nb = copy.deepcopy(solution)
    for name in names:
        grade_id, code = variants[name]
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        cell.source = code.strip() + "\n"
    return nb
