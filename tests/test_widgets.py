"""course_lib.widgets: explorers build without a frontend, their callbacks draw figures, static mode draws one."""
import base64

import ipywidgets
import pytest
import torch
from matplotlib.figure import Figure

from course_lib.data2d import two_moons
from course_lib.mlp import MLPDenoiser
from course_lib.schedules import make_schedule
from course_lib.widgets import (
    ddim_explorer,
    draw_ddim,
    draw_forward,
    draw_schedule,
    forward_scrubber,
    in_kernel,
    schedule_explorer,
)


@pytest.fixture
def schedule():
    return make_schedule("linear", T=100)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return MLPDenoiser(hidden_dim=16, num_layers=1, time_dim=8)


def has_plot(fig):
    """A figure with at least one Axes holding something drawn (lines, points or an image)."""
    return isinstance(fig, Figure) and any(ax.lines or ax.collections or ax.images for ax in fig.axes)


def test_not_in_kernel_here():
    assert not in_kernel(), "pytest is not a Jupyter kernel: explorers should fall back to static figures"


def test_static_mode_is_automatic_outside_a_kernel(schedule):
    assert has_plot(schedule_explorer()), "outside a kernel schedule_explorer() should return its default figure"
    assert has_plot(forward_scrubber(two_moons(64), schedule, t=50))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_draw_schedule(name):
    fig = draw_schedule(name, T=200)
    assert has_plot(fig) and len(fig.axes) == 2, "expected two panels: alpha_bar and log-SNR"


def test_schedule_explorer_widget():
    w = schedule_explorer(static=False)
    assert isinstance(w, ipywidgets.interactive)
    assert {c.description for c in w.children[:-1]} == {"name", "T"}
    w.f(name="cosine", T=50)  # the callback displays a figure; it must not raise


def test_forward_scrubber_points_and_images(schedule, tiny_model):
    w = forward_scrubber(two_moons(64), schedule, static=False)
    assert isinstance(w, ipywidgets.interactive)
    slider = w.children[0]
    assert (slider.min, slider.max) == (0, schedule.T - 1), "the t slider must cover the 0-based t = 0, ..., T-1"
    w.f(t=99)
    fig = forward_scrubber(torch.rand(4, 1, 8, 8) * 2 - 1, schedule, t=10, static=True)
    assert has_plot(fig)
    assert "t = 10" in fig.axes[0].get_title()


def test_forward_scrubber_rejects_bad_input(schedule):
    with pytest.raises(ValueError, match="expected 2-D points"):
        forward_scrubber(torch.zeros(5, 3), schedule, static=True)
    with pytest.raises(ValueError, match="outside"):
        forward_scrubber(two_moons(8), schedule, t=100, static=True)


def test_ddim_explorer(schedule, tiny_model):
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    w = ddim_explorer(tiny_model, schedule, x_T, num_steps=5, static=False)
    assert isinstance(w, ipywidgets.interactive)
    assert {c.description for c in w.children[:-1]} == {"eta", "S", "spacing"}
    w.f(eta=1.0, num_steps=3, spacing="quad")
    fig = draw_ddim(tiny_model, schedule, x_T, eta=0.5, num_steps=4, spacing="linspace")
    assert has_plot(fig) and "S = 4" in fig.axes[0].get_title()
    assert has_plot(ddim_explorer(tiny_model, schedule, x_T, num_steps=5, static=True))
    with pytest.raises(ValueError, match="num_steps"):
        ddim_explorer(tiny_model, schedule, x_T, num_steps=500, static=True)


def test_widget_display_carries_a_static_preview(schedule):
    """One display bundle: the live widget for JupyterLab and a PNG of the default figure for everything else."""
    w = forward_scrubber(two_moons(64), schedule, t=30, static=False)
    assert isinstance(w.preview, Figure) and "t = 30" in w.preview.axes[0].get_title()
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle, "the live widget must stay in the bundle"
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG"), "the static fallback must be a PNG image"
    w.children[0].value = 60  # moving the slider redraws inside the widget; the preview stays the default
    assert "t = 30" in w.preview.axes[0].get_title()
    assert schedule_explorer(static=False).children[1].value == 1000, "the T slider must start at T = 1000"


def test_a_batch_of_images_fills_the_square_figure(schedule):
    """16 images are drawn as a 4x4 grid, not an 8x2 strip lost in the square canvas (review: nb01 scrubber)."""
    fig = draw_forward(torch.zeros(16, 1, 28, 28), 10, schedule, torch.randn(16, 1, 28, 28))
    height, width = fig.axes[0].images[0].get_array().shape[:2]
    assert 0.8 < height / width < 1.25, (height, width)
