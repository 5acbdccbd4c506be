"""Small matplotlib helpers, so a notebook cell holds the idea and not the plotting.

Each helper draws on `ax` (a new figure when None) and returns the Axes; none calls plt.show(),
so the caller can add titles, save the figure or combine panels. Inputs may be tensors or arrays.
"""
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from course_lib.schedules import NoiseSchedule


def _numpy(x):
    """A float64 numpy copy of a tensor, array or list (detached, on the CPU)."""
    if torch.is_tensor(x):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _points(x, name):
    x = _numpy(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} has shape {x.shape}; expected (N, 2), one 2-D point per row")
    return x


def _new_ax(ax, figsize=(4, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def image_grid(x, nrow=8, padding=2):
    """Tile images (B, C, H, W) in [-1, 1] into one array in [0, 1] (values outside are clamped).

    Returns (rows * (H + padding) + padding, cols * (W + padding) + padding) for C = 1, with a
    trailing 3 for C = 3; cols = min(B, nrow), rows = ceil(B / nrow), padding is black, as in
    torchvision's make_grid.
    """
    x = _numpy(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images have shape {x.shape}; expected (B, 1 or 3, H, W), e.g. x[None] for one image")
    if nrow < 1:
        raise ValueError(f"nrow={nrow} must be >= 1 images per row")
    B, C, H, W = x.shape
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0)  # [-1, 1] -> [0, 1], clamped for display
    cols, rows = min(B, nrow), math.ceil(B / nrow)
    grid = np.zeros((rows * (H + padding) + padding, cols * (W + padding) + padding, C))
    for i in range(B):
        top, left = padding + (i // nrow) * (H + padding), padding + (i % nrow) * (W + padding)
        grid[top:top + H, left:left + W] = x[i].transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    return grid[..., 0] if C == 1 else grid  # (H_grid, W_grid) or (H_grid, W_grid, 3)


def show_images(x, nrow=8, title=None, ax=None):
    """Show a batch of images (B, 1 or 3, H, W) with values in [-1, 1] as one grid; returns the Axes.

    Values are mapped to [0, 1] by (x + 1) / 2 and clamped there for display only, so a sampler's
    slight overshoot does not wrap colours. `ax.images[0].get_array()` is the grid shown.
    """
    grid = image_grid(x, nrow=nrow)
    height, width = grid.shape[:2]
    ax = _new_ax(ax, figsize=(5 * width / max(height, width), 5 * height / max(height, width)))  # longest side 5 in
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def plot_points(x, ax=None, title=None, **kw):
    """Scatter a 2-D point cloud x (N, 2); keyword arguments go to ax.scatter. Returns the Axes."""
    x = _points(x, "x")
    ax = _new_ax(ax)
    ax.scatter(x[:, 0], x[:, 1], **{"s": 4, "alpha": 0.5, **kw})
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_trajectories(traj, ax=None, n=16, title=None):
    """Draw the paths of the first n points of traj (steps, N, 2), with start and end markers.

    traj may also be a list of (N, 2) tensors, one per step, as a sampler collects them.
    Each path is one line; starts are black circles, ends red crosses. Returns the Axes.
    """
    if isinstance(traj, (list, tuple)):
        traj = np.stack([_numpy(x_t) for x_t in traj])  # (steps, N, 2)
    traj = _numpy(traj)
    if traj.ndim != 3 or traj.shape[2] != 2:
        raise ValueError(f"traj has shape {traj.shape}; expected (steps, N, 2), the points at every step")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1 paths to draw")
    traj = traj[:, :n]  # (steps, n, 2)
    ax = _new_ax(ax)
    ax.plot(traj[:, :, 0], traj[:, :, 1], lw=0.8, alpha=0.6)  # one line per path
    ax.scatter(traj[0, :, 0], traj[0, :, 1], c="black", s=16, marker="o", label="start", zorder=3)
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], c="red", s=24, marker="x", label="end", zorder=3)
    ax.set_aspect("equal")
    ax.legend(loc="best")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_schedules(schedules, axes=None):
    """Plot alpha_bar[t] and log-SNR[t] = log(alpha_bar / (1 - alpha_bar)) against t, one line per schedule.

    schedules: dict name -> NoiseSchedule (or one NoiseSchedule). axes: two Axes, or None for a new
    1x2 figure. Returns the two Axes (alpha_bar, log-SNR).
    """
    if isinstance(schedules, NoiseSchedule):
        schedules = {schedules.name: schedules}
    if not isinstance(schedules, dict) or not schedules:
        raise ValueError("schedules must be a non-empty dict name -> NoiseSchedule, e.g. {'linear': make_schedule()}")
    for name, schedule in schedules.items():
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedules[{name!r}] is a {type(schedule).__name__}, not a NoiseSchedule")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    if len(axes) != 2:
        raise ValueError(f"axes must hold two Axes (alpha_bar, log-SNR), got {len(axes)}")
    ax_abar, ax_snr = axes
    for name, schedule in schedules.items():
        alpha_bar = _numpy(schedule.alpha_bar)
        t = np.arange(schedule.T)
        ax_abar.plot(t, alpha_bar, label=name)
        ax_snr.plot(t, np.log(alpha_bar) - np.log1p(-alpha_bar), label=name)  # log SNR, stable near 1
    ax_abar.set(xlabel="t", ylabel="alpha_bar[t]", title="signal kept, alpha_bar")
    ax_snr.set(xlabel="t", ylabel="log SNR[t]", title="log(alpha_bar / (1 - alpha_bar))")
    ax_abar.legend()
    ax_snr.legend()
    return ax_abar, ax_snr


def plot_loss(losses, ax=None, smooth=100):
    """Plot a training loss curve: raw values faint, and their moving average over `smooth` steps.

    losses: 1-D sequence of floats (a list, array or tensor). smooth <= 1 draws the raw curve only.
    Returns the Axes.
    """
    losses = _numpy(losses)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses has shape {losses.shape}; expected a non-empty 1-D sequence, one loss per step")
    ax = _new_ax(ax, figsize=(6, 3.5))
    steps = np.arange(losses.size)
    window = min(int(smooth), losses.size)
    if window > 1:
        ax.plot(steps, losses, alpha=0.3, lw=0.8, label="loss")
        cumsum = np.cumsum(np.insert(losses, 0, 0.0))  # (L + 1,)
        moving_average = (cumsum[window:] - cumsum[:-window]) / window  # (L - window + 1,)
        ax.plot(steps[window - 1:], moving_average, lw=1.5, label=f"mean of last {window}")
        ax.legend()
    else:
        ax.plot(steps, losses, lw=1.0)
    ax.set(xlabel="step", ylabel="loss")
    return ax


def plot_score_field(score_fn, xlim, ylim, ax=None, n=20, normalize=False, **kw):
    """Quiver plot of a 2-D vector field on an n x n grid over xlim x ylim; returns the Axes.

    score_fn maps points (n * n, 2) float32 to vectors (n * n, 2), e.g. GaussianMixture.score or
    lambda x: model(x, t). normalize=True draws unit arrows, to see directions where magnitudes
    differ a lot. Keyword arguments go to ax.quiver.
    """
    if n < 2:
        raise ValueError(f"n={n} must be >= 2 grid points per axis")
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not lim[0] < lim[1]:
            raise ValueError(f"{name}={lim!r} must be a pair (low, high) with low < high")
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    xx, yy = np.meshgrid(xs, ys)  # (n, n) each
    points = torch.tensor(np.stack([xx.ravel(), yy.ravel()], axis=1), dtype=torch.float32)  # (n * n, 2)
    with torch.no_grad():
        vectors = _numpy(score_fn(points))
    if vectors.shape != (n * n, 2):
        raise ValueError(f"score_fn returned shape {vectors.shape} for points of shape {tuple(points.shape)}; "
                         f"expected ({n * n}, 2), one vector per point")
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    ax = _new_ax(ax)
    ax.quiver(xx.ravel(), yy.ravel(), vectors[:, 0], vectors[:, 1], **kw)
    ax.set_aspect("equal")
    ax.set(xlim=xlim, ylim=ylim)
    return ax
