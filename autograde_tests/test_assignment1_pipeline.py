"""Assignment 1's grading pipeline, end to end, in a fresh temporary course root.

nbgrader generates the release, then autogrades named submissions: the solution (full marks), the untouched
release (zero, without crashing) and known student mistakes, each made by replacing one line of the solution,
which must lose exactly the points of the checks it breaks. Scores come from nbgrader's Gradebook.
"""
import pytest

from autograde_tests.pipeline import Course, uncaptured_print, with_mistake

ASSIGNMENT = "assignment1"
MAX_SCORE = 17.0

# name: (line in the solution, the student's version, expected score). Points: linear_betas 1, cosine_betas 2,
# alpha_bar_from_betas 1, q_sample 2, l_simple 2, posterior_mean_variance 3, ddpm_step 3, ddpm_sample 3.
# A mistake also costs the points of the functions that call the broken one (l_simple calls q_sample,
# ddpm_sample calls ddpm_step, which calls posterior_mean_variance).
MISTAKES = {
    "alpha_bar_cumsum": ("return torch.cumprod(1 - betas, dim=0)", "return torch.cumsum(1 - betas, dim=0)", 16.0),
    "cosine_not_clipped": ("betas = [min(1 - f(t + 1) / f(t), max_beta) for t in range(T)]",
                           "betas = [1 - f(t + 1) / f(t) for t in range(T)]", 15.0),
    "q_sample_no_sqrt": ("(1 - alpha_bar_t).sqrt() * noise", "(1 - alpha_bar_t) * noise", 13.0),
    "posterior_fixed_large": ("posterior_variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * betas[t]",
                              "posterior_variance = betas[t]", 8.0),
    "x0_pred_alpha_t": ("x0_pred = (x_t - (1 - alpha_bar_t).sqrt() * eps_pred) / alpha_bar_t.sqrt()",
                        "x0_pred = (x_t - betas[t].sqrt() * eps_pred) / (1 - betas[t]).sqrt()", 11.0),
    "noise_added_at_t0": ("        return mean  # the last step adds no noise\n", "        pass\n", 11.0),
    "sampler_ascending": ("for t in range(T - 1, -1, -1):", "for t in range(T):", 14.0),
    "l_simple_sum": ("return ((noise - eps_pred) ** 2).mean()", "return ((noise - eps_pred) ** 2).sum()", 15.0),
}


@pytest.fixture(scope="module")
def course(tmp_path_factory, request):
    return Course(tmp_path_factory.mktemp("course"), ASSIGNMENT, report=uncaptured_print(request))


def test_release_has_no_solutions_or_hidden_tests(course):
    text = (course.root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True", "torch.cumprod",
                   "range(T - 1, -1, -1)", "max_beta) for t in range(T)"]:
        assert marker not in text, f"the release leaks {marker!r}"
    assert "raise NotImplementedError()" in text


def test_solution_gets_full_marks(course):
    assert course.autograde("solution", course.notebook("solutions")) == (MAX_SCORE, MAX_SCORE)


def test_blank_release_gets_zero(course):
    assert course.autograde("blank", course.notebook("notebooks")) == (0.0, MAX_SCORE)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake_loses_exactly_its_points(course, name):
    old, new, expected = MISTAKES[name]
    student = name.replace("_", "-")
    assert course.autograde(student, with_mistake(course.notebook("solutions"), old, new)) == (expected, MAX_SCORE)
