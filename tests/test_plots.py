"""course_lib.plots: each helper draws what it should on small inputs, rejects bad shapes, and saves a PNG."""
import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from course_lib.data2d import GaussianMixture, two_moons  # noqa: E402
from course_lib.plots import (  # noqa: E402
    image_grid,
    plot_loss,
    plot_points,
    plot_schedules,
    plot_score_field,
    plot_trajectories,
    show_images,
)
from course_lib.schedules import make_schedule  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def save_png(ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path, dpi=50)
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", f"{name}.png is empty or not a PNG"


@pytest.mark.parametrize("channels", [1, 3])
def test_show_images_grid(channels, tmp_path):
    x = 1.5 * torch.randn(10, channels, 6, 5)  # overshoots [-1, 1] on purpose
    ax = show_images(x, nrow=4, title="samples")
    assert len(ax.images) == 1
    shown = np.asarray(ax.images[0].get_array())
    expected = (3 * (6 + 2) + 2, 4 * (5 + 2) + 2) + ((3,) if channels == 3 else ())  # rows=ceil(10/4)=3, cols=4
    assert shown.shape == expected
    assert shown.min() >= 0.0 and shown.max() <= 1.0, "images must be mapped to [0, 1] and clamped"
    # image 5 sits in row 1, column 1: (x + 1) / 2, clamped
    top, left = 2 + 1 * 8, 2 + 1 * 7
    want = np.clip((x[5].numpy().transpose(1, 2, 0) + 1) / 2, 0, 1)  # (H, W, C)
    got = shown[top:top + 6, left:left + 5].reshape(6, 5, channels)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert ax.get_title() == "samples"
    save_png(ax, tmp_path, f"images_{channels}")


def test_show_images_on_given_ax_and_bad_shapes():
    _, ax = plt.subplots()
    assert show_images(torch.zeros(2, 1, 4, 4), ax=ax) is ax
    for bad in (torch.zeros(4, 4), torch.zeros(1, 4, 4), torch.zeros(2, 2, 4, 4)):
        with pytest.raises(ValueError, match="expected"):
            show_images(bad)
    assert image_grid(torch.zeros(1, 3, 4, 4)).shape == (8, 8, 3)


def test_plot_points(tmp_path):
    x = two_moons(300)
    ax = plot_points(x, title="moons", c="C1")
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert points.get_offsets().shape == (300, 2)
    assert ax.get_title() == "moons"
    save_png(ax, tmp_path, "points")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_points(torch.zeros(10, 3))


def test_plot_trajectories(tmp_path):
    traj = torch.cumsum(0.1 * torch.randn(30, 50, 2), dim=0)  # (steps, N, 2) random walks
    ax = plot_trajectories(traj, n=5, title="paths")
    assert len(ax.lines) == 5, "one line per path"
    starts, ends = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(starts.get_offsets(), traj[0, :5].numpy(), rtol=1e-6)
    np.testing.assert_allclose(ends.get_offsets(), traj[-1, :5].numpy(), rtol=1e-6)
    save_png(ax, tmp_path, "trajectories")
    ax_list = plot_trajectories(list(traj), n=3)  # a sampler's list of (N, 2) steps
    assert len(ax_list.lines) == 3
    with pytest.raises(ValueError, match="steps, N, 2"):
        plot_trajectories(torch.zeros(30, 2))


def test_plot_schedules(tmp_path):
    schedules = {"linear": make_schedule("linear", T=100), "cosine": make_schedule("cosine", T=100)}
    ax_abar, ax_snr = plot_schedules(schedules)
    assert [line.get_label() for line in ax_abar.lines] == ["linear", "cosine"]
    assert len(ax_snr.lines) == 2
    np.testing.assert_allclose(ax_abar.lines[0].get_ydata(), schedules["linear"].alpha_bar.numpy(), rtol=1e-6)
    abar = schedules["cosine"].alpha_bar.double().numpy()
    np.testing.assert_allclose(ax_snr.lines[1].get_ydata(), np.log(abar / (1 - abar)), rtol=1e-6)
    save_png(ax_abar, tmp_path, "schedules")
    assert len(plot_schedules(make_schedule("linear", T=10))[0].lines) == 1
    with pytest.raises(ValueError, match="NoiseSchedule"):
        plot_schedules({"linear": torch.zeros(10)})


def test_plot_loss(tmp_path):
    losses = list(1.0 / np.arange(1, 301) + 0.05 * np.random.default_rng(0).random(300))
    ax = plot_loss(losses, smooth=20)
    raw, smoothed = ax.lines
    assert len(raw.get_ydata()) == 300 and len(smoothed.get_ydata()) == 300 - 20 + 1
    np.testing.assert_allclose(smoothed.get_ydata()[0], np.mean(losses[:20]))
    save_png(ax, tmp_path, "loss")
    assert len(plot_loss(torch.tensor([1.0, 0.5]), smooth=1).lines) == 1
    for bad in ([], np.zeros((3, 3))):
        with pytest.raises(ValueError, match="1-D"):
            plot_loss(bad)


def test_plot_score_field(tmp_path):
    gm = GaussianMixture.default()
    ax = plot_score_field(gm.score, (-2, 2), (-2, 2), n=7, normalize=True)
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    assert quiver.U.shape == (49,)
    np.testing.assert_allclose(np.hypot(quiver.U, quiver.V), 1.0, rtol=1e-5)
    save_png(ax, tmp_path, "score_field")
    with pytest.raises(ValueError, match="score_fn returned"):
        plot_score_field(lambda x: x[:, :1], (-1, 1), (-1, 1), n=5)
    with pytest.raises(ValueError, match="xlim"):
        plot_score_field(gm.score, (1, -1), (-1, 1))
