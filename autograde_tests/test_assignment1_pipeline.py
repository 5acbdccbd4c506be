"""Assignment 1's grading pipeline, end to end, in a fresh temporary course root.

nbgrader generates the release, then autogrades named submissions: the solution (full marks), the untouched
release (zero, without crashing) and known student mistakes, each made by replacing one line of the solution,
which must lose exactly the points of the checks it breaks. Scores come from nbgrader's Gradebook.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "assignment1"
MAX_SCORE = 17.0
AUTOGRADE_SECONDS = 60  # per submission, on a 2-core CPU

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


def nbgrader(root, *args):
    env = {**os.environ, "COURSE_ROOT": str(REPO),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           # nbgrader starts `alembic` by name: take it from this Python's environment, activated or not
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    exe = [sys.executable, "-m", "nbgrader"]
    result = subprocess.run([*exe, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _report(line):
    print(line)


def _show_timings(request):
    """Print autograde timings past pytest's output capture, so they show in CI's log without -s."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        global _report

        def _report(line):
            with capture.global_and_fixture_disabled():
                print(f"\n{line}", flush=True)


def submit(root, student, nb):
    folder = root / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{ASSIGNMENT}.ipynb")


def score(root, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        submission = gb.find_submission(ASSIGNMENT, student)
        return submission.score, submission.max_score


def with_mistake(solution, old, new):
    nb = nbformat.from_dict(solution)
    hits = [cell for cell in nb.cells if old in cell.source]
    assert len(hits) == 1 and hits[0].source.count(old) == 1, f"{old!r} should occur once in the solution"
    hits[0].source = hits[0].source.replace(old, new)
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory, request):
    _show_timings(request)
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", root)
    shutil.copytree(REPO / "solutions", root / "solutions")
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return root


def test_release_has_no_solutions_or_hidden_tests(course):
    text = (course / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True", "torch.cumprod",
                   "range(T - 1, -1, -1)", "max_beta) for t in range(T)"]:
        assert marker not in text, f"the release leaks {marker!r}"
    assert "raise NotImplementedError()" in text


def autograde(root, student, nb):
    submit(root, student, nb)
    start = time.perf_counter()
    nbgrader(root, "autograde", ASSIGNMENT, "--student", student, "--force")
    seconds = time.perf_counter() - start
    _report(f"[autograde time] {ASSIGNMENT} {student}: {seconds:.1f} s (budget {AUTOGRADE_SECONDS} s)")
    assert seconds <= AUTOGRADE_SECONDS, f"autograding {student} took {seconds:.0f} s"
    return score(root, student)


def test_solution_gets_full_marks(course):
    nb = nbformat.read(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    assert autograde(course, "solution", nb) == (MAX_SCORE, MAX_SCORE)


def test_blank_release_gets_zero(course):
    nb = nbformat.read(course / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    assert autograde(course, "blank", nb) == (0.0, MAX_SCORE)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake_loses_exactly_its_points(course, name):
    old, new, expected = MISTAKES[name]
    solution = nbformat.read(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    student = name.replace("_", "-")
    assert autograde(course, student, with_mistake(solution, old, new)) == (expected, MAX_SCORE)
