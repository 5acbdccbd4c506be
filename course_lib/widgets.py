"""Interactive explorers for the lecture notebooks, built on ipywidgets, each with a static fallback.

    schedule_explorer()                  linear or cosine schedule, T: alpha_bar and log-SNR
    forward_scrubber(x0, schedule)       a slider over t showing x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    ddim_explorer(model, schedule, x_T)  eta, S = num_steps and spacing: samples from course_lib.ddim

Every explorer has a `draw_*` function that returns one matplotlib Figure for given settings (the
widget's callback, and what tests call). An explorer returns an `ipywidgets.interactive` whose display
also carries a PNG of the figure at its default values: JupyterLab shows the live widget once, and a
notebook viewed without a widget frontend (nbconvert, a static viewer, a PDF) still shows a plot.
With static=True, or outside a Jupyter kernel, it returns the default Figure itself. Figures are built
with matplotlib.figure.Figure, not pyplot, so they never pile up in pyplot's list of open figures.
"""
import base64
import io
import math

import torch
from matplotlib.figure import Figure

from course_lib.ddim import SPACINGS, ddim_sample, make_timesteps
from course_lib.device import randn
from course_lib.forward import add_noise
from course_lib.plots import plot_points, plot_schedules, show_images
from course_lib.schedules import SCHEDULE_NAMES, check_timestep, make_schedule


def in_kernel():
    """True inside a Jupyter kernel (where widgets can live), False in a plain Python process."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _explore(draw, controls, static):
    """An ipywidgets.interactive over `controls` (widgets holding the default values) whose callback
    displays draw(**values); with static (automatic outside a kernel), draw(**defaults) itself.

    The widget's display bundle also carries a PNG of its first figure: JupyterLab renders only the
    live widget, and a frontend without widgets (nbconvert, a static viewer, a PDF) shows the PNG.
    """
    if static is None:
        static = not in_kernel()
    if static:
        return draw(**{name: control.value for name, control in controls.items()})
    import ipywidgets as widgets
    from IPython.display import display

    class Explorer(widgets.interactive):
        preview = None  # the Figure at the default values

        def _repr_mimebundle_(self, **kwargs):
            data = super()._repr_mimebundle_(**kwargs)
            if self.preview is not None:
                data["image/png"] = _png_base64(self.preview)
            return data

    first = []  # only the first figure is kept: later ones live in the widget's output and are let go

    def show(**kwargs):
        fig = draw(**kwargs)
        if not first:
            first.append(fig)
        display(fig)

    explorer = Explorer(show, **controls)  # draws once at the default values
    explorer.preview = first[0]
    return explorer


def _png_base64(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _is_points(x):
    return x.dim() == 2 and x.shape[1] == 2


def _check_batch(x, name):
    if not torch.is_tensor(x) or not (_is_points(x) or (x.dim() == 4 and x.shape[1] in (1, 3))):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} has shape {shape}; expected 2-D points (N, 2) or images (B, 1 or 3, H, W)")


def _show_batch(x, ax, title, lim=None):
    """Points (N, 2) as a scatter with fixed limits, or images (B, C, H, W) in [-1, 1] as a grid."""
    if _is_points(x):
        plot_points(x, ax=ax, title=title)
        if lim is not None:
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim))
    else:  # a square grid, so that the batch fills the square figure instead of a thin strip across it
        show_images(x, nrow=math.ceil(math.sqrt(x.shape[0])), ax=ax, title=title)


# 1. noise schedules -------------------------------------------------------------------------------

def draw_schedule(name="linear", T=1000):
    """Figure with alpha_bar[t] and log-SNR[t] of make_schedule(name, T), linear for reference."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    axes = fig.subplots(1, 2)
    schedules = {name: make_schedule(name, T)}
    if name != "linear" or T != 1000:
        schedules["linear, T=1000 (reference)"] = make_schedule("linear", 1000)
    plot_schedules(schedules, axes=axes)
    return fig


def schedule_explorer(static=None):
    """Choose the schedule (linear or cosine) and T; shows alpha_bar and log-SNR against t.

    Returns an ipywidgets.interactive, or with static=True (automatic outside a kernel) the Figure.
    """
    import ipywidgets as widgets
    controls = {"name": widgets.Dropdown(options=list(SCHEDULE_NAMES), value="linear", description="name"),
                "T": widgets.IntSlider(value=1000, min=10, max=2000, step=10, description="T")}
    return _explore(draw_schedule, controls, static)


# 2. the forward process -----------------------------------------------------------------------------

def draw_forward(x0, t, schedule, noise):
    """Figure of x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (DDPM eq. 4) for one int t."""
    alpha_bar_t = schedule.alpha_bar[t].item()
    x_t = add_noise(x0, torch.full((x0.shape[0],), t, dtype=torch.long), noise, schedule)
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    title = f"t = {t}: abar_t = {alpha_bar_t:.4f}, SNR = {schedule.snr[t].item():.3g}"
    _show_batch(x_t, fig.subplots(), title, lim=4.0)
    return fig


def forward_scrubber(x0, schedule, t=0, seed=0, static=None):
    """A slider over t = 0, ..., T-1 showing x_t for a batch x0: images (B, C, H, W) or points (N, 2).

    The noise is drawn once (from `seed`), so moving the slider shows one path dissolving, not new noise.
    Returns an ipywidgets.interactive, or with static=True (automatic outside a kernel) the Figure at t.
    """
    _check_batch(x0, "x0")
    x0 = x0.detach().cpu().float()
    schedule = schedule.to("cpu", torch.float32)
    check_timestep(t, schedule.T)
    noise = randn(x0.shape, torch.Generator().manual_seed(seed))

    def draw(t):
        return draw_forward(x0, t, schedule, noise)

    import ipywidgets as widgets
    slider = widgets.IntSlider(value=t, min=0, max=schedule.T - 1, step=1, description="t")
    return _explore(draw, {"t": slider}, static)


# 3. DDIM sampling -------------------------------------------------------------------------------------

def draw_ddim(model, schedule, x_T, eta=0.0, num_steps=20, spacing="trailing", seed=0):
    """Figure of ddim_sample(model, x_T, ...) with S = num_steps steps; the noise for eta > 0 comes from seed."""
    timesteps = make_timesteps(schedule.T, num_steps, spacing)
    x0 = ddim_sample(model, x_T, schedule, timesteps, eta=eta, generator=torch.Generator().manual_seed(seed),
                     progress=False)
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    _show_batch(x0.cpu(), fig.subplots(), f"DDIM: eta = {eta:.2f}, S = {num_steps}, {spacing}", lim=3.0)
    return fig


def ddim_explorer(model, schedule, x_T, eta=0.0, num_steps=20, spacing="trailing", max_steps=100, static=None):
    """Sliders for eta in [0, 1] and S = num_steps, a dropdown for the spacing; shows DDIM samples from x_T.

    model(x_t, t) -> eps_pred; x_T: (N, 2) points or (B, C, H, W) images, standard normal, on the
    model's device. Sampling reruns when a slider is released, not while it is dragged.
    Returns an ipywidgets.interactive, or with static=True (automatic outside a kernel) the Figure.
    """
    _check_batch(x_T, "x_T")
    max_steps = min(max_steps, schedule.T)
    if not 1 <= num_steps <= max_steps:
        raise ValueError(f"num_steps={num_steps} must lie in [1, {max_steps}]")
    model.eval()

    def draw(eta, num_steps, spacing):
        return draw_ddim(model, schedule, x_T, eta, num_steps, spacing)

    import ipywidgets as widgets
    controls = {
        "eta": widgets.FloatSlider(value=eta, min=0.0, max=1.0, step=0.1, description="eta",
                                   continuous_update=False),
        "num_steps": widgets.IntSlider(value=num_steps, min=1, max=max_steps, description="S",
                                       continuous_update=False),
        "spacing": widgets.Dropdown(options=list(SPACINGS), value=spacing, description="spacing"),
    }
    return _explore(draw, controls, static)
