"""Correct but different solutions (autograde_tests/equivalents.py) get full marks: each one through the checks in a
student's kernel (every check, visible and hidden), and all of them packed into a few notebooks through the whole
grading pipeline (nbgrader, the sandbox, the judge)."""
import nbformat
import pytest

from autograde_tests import checks, checks_ddim
from autograde_tests.equivalents import A1, A2, packs, with_variants
from autograde_tests.judge import check_calls
from autograde_tests.pipeline import REPO, Course, uncaptured_print

ASSIGNMENTS = {"assignment1": (A1, (17.0, 17.0)), "assignment2": (A2, (20.0, 22.0))}  # (auto, max incl. hand-graded)


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
