"""Assignment 2's grading pipeline (DDPM into DDIM), end to end, in a fresh temporary course root.

nbgrader generates the release, then autogrades named submissions: the solution (full marks), the untouched
release (zero, without crashing) and known student mistakes, each made by replacing one line of the solution,
which must lose exactly the points of the checks it breaks. Scores come from nbgrader's Gradebook.

The written answer (section 8) is a manually graded cell worth 2 points. nbgrader counts its points in max_score
but autograde gives it no score until a person grades it, so the solution autogrades to (22, 24), not (24, 24):
asserting that exact pair shows the manual cell neither breaks the totals nor gets points by itself.
"""
import nbformat
import pytest

from autograde_tests.pipeline import Course, uncaptured_print, with_mistake

ASSIGNMENT = "assignment2"
AUTO_SCORE = 22.0  # the autograded cells
MANUAL_POINTS = 2.0  # the written answer, graded by hand
MAX_SCORE = AUTO_SCORE + MANUAL_POINTS

# name: (line in the solution, the student's version, expected score). Points: ddim_sigma 2, ddim_weights 2,
# make_timesteps 3,
# ddim_step 3, ddim_sample (eta > 0) 3, determinism at eta = 0 2, beside diffusers 1 (eta = 0 and 0.5),
# ddim_invert 2, reconstruction_mse 2, slerp 2. A mistake also costs the points of the checks that call the broken
# function: ddim_step calls ddim_sigma, the three sampler checks call ddim_step, reconstruction_mse calls
# ddim_invert and ddim_sample. A mistake in sigma_t alone keeps the eta = 0 checks (sigma_t = 0 there).
SIGMA_LINE = "return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * beta_t.sqrt()"
X0_PRED = "x0_pred = (x_t - (1 - alpha_bar_t).sqrt() * eps_pred) / alpha_bar_t.sqrt()"
PREV_LINE = "alpha_bar_prev = alpha_bar[t_prev] if t_prev >= 0 else torch.ones_like(alpha_bar[t])  # 1 after the last step"
MISTAKES = {
    # omega_t without its square root (the variance condition solved for omega_t^2). Loses ddim_weights only.
    "weights_variance_not_rooted": ("omega_t = ((1 - alpha_bar_prev - sigma_t**2) / (1 - alpha_bar_t)).sqrt()",
                                    "omega_t = (1 - alpha_bar_prev - sigma_t**2) / (1 - alpha_bar_t)", 20.0),
    # eq. (16) as some course notes write it: beta_t outside the square root. Loses sigma, step, sample, diffusers.
    "sigma_beta_outside_sqrt": (SIGMA_LINE, "return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * beta_t",
                                13.0),
    # DDPM's "fixed large" sigma-hat = sqrt(1 - abar_t/abar_prev): not 0 at the last step, so noise is added to x_0
    # at the final step (sqrt(1 - 1 - sigma^2) is then NaN). Loses sigma, step, sample, diffusers.
    "noise_added_at_final_step": (SIGMA_LINE, "return eta * beta_t.sqrt()", 13.0),
    # abar_t where abar_prev belongs, in the direction term. Loses step and everything that samples.
    "direction_abar_t_for_abar_prev": ("dir_xt = (1 - alpha_bar_prev - sigma_t**2).sqrt() * eps_pred",
                                       "dir_xt = (1 - alpha_bar_t - sigma_t**2).sqrt() * eps_pred", 11.0),
    # the sampler steps to the table's neighbour t - 1 (DDPM's abar_{t-1}, i.e. the table's betas[t]) instead of the
    # pair's t_prev: right on the full sequence, wrong on every sub-sequence. Loses the three sampler checks and
    # reconstruction.
    "table_beta_t_minus_1": (PREV_LINE, "alpha_bar_prev = alpha_bar[t - 1] if t > 0 else torch.ones_like(alpha_bar[t])",
                             14.0),
    # the last step does not go to abar = 1: alpha_bar[-1] wraps round to the table's last entry (~4e-5).
    "last_step_not_to_abar_1": (PREV_LINE, "alpha_bar_prev = alpha_bar[t_prev]", 14.0),
    # alpha_t = abar_t / abar_prev where abar_t belongs in x0_pred. Loses step and everything that samples.
    "x0_pred_alpha_t": (X0_PRED, "x0_pred = (x_t - (1 - alpha_bar_t / alpha_bar_prev).sqrt() * eps_pred) / "
                                 "(alpha_bar_t / alpha_bar_prev).sqrt()", 11.0),
    # clipping x0_pred to [-1, 1] when nobody asked (diffusers' default clip_sample=True). Same checks as above.
    "clips_x0_unasked": (X0_PRED, f"x0_pred = ({X0_PRED.split(' = ', 1)[1]}).clamp(-1, 1)", 11.0),
    # sigma_t^2 where sigma_t belongs (the noise scaled by the variance). Only eta > 0 is affected: loses step,
    # sample, diffusers; keeps determinism and reconstruction.
    "noise_scaled_by_variance": ("x_prev = x_prev + sigma_t * noise", "x_prev = x_prev + sigma_t**2 * noise", 15.0),
    # no square root on the direction term. Loses step and everything that samples.
    "direction_without_sqrt": ("dir_xt = (1 - alpha_bar_prev - sigma_t**2).sqrt() * eps_pred",
                               "dir_xt = (1 - alpha_bar_prev - sigma_t**2) * eps_pred", 11.0),
    # timesteps ascending. Loses make_timesteps only (the samplers are checked with the reference's pairs).
    "timesteps_ascending": ("ts = sorted(ts, reverse=True)", "ts = sorted(ts)", 19.0),
    # trailing without the - 1 (1-based t): t = T is off the table. Loses make_timesteps only.
    "trailing_off_by_one": ("ts = [round(T - i * (T / S)) - 1 for i in range(S)]",
                            "ts = [round(T - i * (T / S)) for i in range(S)]", 19.0),
    # quad as the official code has it: repeated timesteps once S >= 50 (hidden tests). Loses make_timesteps.
    "quad_duplicated_steps": ("ts = [max(i, int(c[i])) for i in range(S)]", "ts = [int(c[i]) for i in range(S)]",
                              19.0),
    # inversion evaluates eps at t_prev (the step's start, -1 at the first step) instead of the target t. Loses
    # ddim_invert and reconstruction_mse.
    "invert_eps_at_t_prev": ("t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,) eps at",
                             "t_batch = torch.full((x.shape[0],), t_prev, dtype=torch.long, device=x.device)  # at",
                             18.0),
    # slerp replaced by the straight line. Loses slerp only.
    "slerp_is_lerp": ("return torch.where(theta.sin() > 1e-6, spherical, straight).reshape(z0.shape)",
                      "return straight.reshape(z0.shape)", 20.0),
}



@pytest.fixture(scope="module")
def course(tmp_path_factory, request):
    return Course(tmp_path_factory.mktemp("course"), ASSIGNMENT, report=uncaptured_print(request))


def test_release_has_no_solutions_or_hidden_tests(course):
    text = (course.root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True", "Rubric", "Model answer",
                   "beta_t.sqrt()", "sorted(ts, reverse=True)", "for i in range(S)]", "sigma_t * noise",
                   "reversed(timesteps)", "theta.sin() > 1e-6", "((x0_rec - x0) ** 2)"]:
        assert marker not in text, f"the release leaks {marker!r}"
    nb = nbformat.reads(text, as_version=4)
    stubs = [c for c in nb.cells if c.cell_type == "code" and "# YOUR CODE HERE" in c.source
             and "raise NotImplementedError()" in c.source]
    assert len(stubs) == 8, "one stub per graded function"
    assert any(c.cell_type == "markdown" and c.source.strip() == "YOUR ANSWER HERE" for c in nb.cells)


def test_every_mistake_is_one_line_of_the_solution(course):
    solution = course.notebook("solutions")
    for name, (old, new, _) in MISTAKES.items():
        assert "\n" not in old.strip("\n") and "\n" not in new.strip("\n"), name
        with_mistake(solution, old, new)  # asserts that `old` occurs exactly once


def test_solution_gets_full_marks(course):
    # full marks for everything a machine grades; the written answer waits for a person (see the docstring)
    assert course.autograde("solution", course.notebook("solutions")) == (AUTO_SCORE, MAX_SCORE)


def test_blank_release_gets_zero(course):
    assert course.autograde("blank", course.notebook("notebooks")) == (0.0, MAX_SCORE)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake_loses_exactly_its_points(course, name):
    old, new, expected = MISTAKES[name]
    student = name.replace("_", "-")
    assert course.autograde(student, with_mistake(course.notebook("solutions"), old, new)) == (expected, MAX_SCORE)
