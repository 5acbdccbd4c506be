"""Correct but different solutions (autograde_tests/equivalents.py) get full marks: each one through the checks in a
student's kernel (every check, visible and hidden), and all of them packed into a few notebooks through the whole
grading pipeline (nbgrader, the sandbox, the judge)."""
import nbformat
import pytest

from autograde_tests import checks, checks_ddim
from autograde_tests.equivalents import A1, A2, packs, with_variants
from autograde_tests.judge import check_calls
from autograde_tests.pipeline import REPO, Course, uncaptured_print

ASSIGNMENTS = {"assignment1": (A1, (17.0, 17.0)), "assignment2": (A2, (22.0, 24.0))}  # (auto, max incl. hand-graded)


def solution(assignment):
    return nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def run_checks_locally(nb):
    """Execute the notebook's set-up and solution cells here, then every check call of its graded cells."""
    namespace = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "imports_and_checks_path"):
            exec(cell.source, namespace)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            for name, args, hidden in check_calls(cell.source):
                entry = getattr(checks, name, None) or getattr(checks_ddim, name)
                entry(*[namespace[a] for a in args], hidden=hidden)


@pytest.mark.parametrize("assignment,name", [(a, n) for a, (v, _) in ASSIGNMENTS.items() for n in v])
def test_equivalent_passes_every_check(assignment, name):
    variants, _ = ASSIGNMENTS[assignment]
    run_checks_locally(with_variants(solution(assignment), variants, [name]))


def test_at_least_ten_per_assignment():
    assert len(A1) >= 10 and len(A2) >= 10


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_equivalents_get_full_marks_when_graded(assignment, tmp_path, request):
    variants, max_score = ASSIGNMENTS[assignment]
    course = Course(tmp_path, assignment, report=uncaptured_print(request))
    for k, names in enumerate(packs(variants)):
        nb = with_variants(course.notebook("solutions"), variants, names)
        assert course.autograde(f"equivalent-{k}", nb) == max_score, f"lost points: {names}"


def test_student_sees_the_teaching_line_and_no_grader_frames():
    """In a student's kernel a failed check shows one line, the message, without frames of harness.py or checks.py;
    a function that changes its argument in place is told which argument."""
    from nbclient import NotebookClient

    code = ("import sys; sys.path.insert(0, {repo!r})\nimport torch\nfrom autograde_tests.checks import check_q_sample\n"
            "def q_sample(x0, t, noise, alpha_bar):\n    return x0 * 1.0\ncheck_q_sample(q_sample)")
    mutating = ("def q_sample(x0, t, noise, alpha_bar):\n    a = alpha_bar[t].reshape(-1, *[1] * (x0.dim() - 1))\n"
                "    x0 *= a.sqrt()\n    return x0 + (1 - a).sqrt() * noise\ncheck_q_sample(q_sample)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code.format(repo=str(REPO))),
                                         nbformat.v4.new_code_cell(mutating)])
    NotebookClient(nb, timeout=120, allow_errors=True).execute()
    for cell, expected in zip(nb.cells, ["sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise", "argument `x0` in place"]):
        error = next(o for o in cell.outputs if o.output_type == "error")
        assert len(error.traceback) == 1 and expected in error.traceback[0], error.traceback
        assert "harness.py" not in "".join(error.traceback) and "checks.py" not in "".join(error.traceback)
