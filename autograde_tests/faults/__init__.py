"""Fault submissions for the grader, built at test time from solutions/<assignment> (cells found by grade_id).

Each fault is (build, expected score, a problem the report must mention or None). `build(solution, release)`
returns a notebook, or bytes for a file that is not one. Most faults are "quick": the ungraded cells after the
last graded cell (training, plots) are dropped, as a student may, so that a batch of 20 grades in minutes.
Points (Assignment 1, 17 in all): linear_betas 1, cosine_betas 2, alpha_bar 1, q_sample 2, l_simple 2,
posterior_mean_variance 3, ddpm_step 3, ddpm_sample 3; a broken function also costs the checks of its callers.
"""
import copy
import importlib.util
import sys
from pathlib import Path

import nbformat

from autograde_tests.pipeline import with_mistake
from autograde_tests.test_assignment1_pipeline import MISTAKES


def load_grade_script():
    """scripts/grade.py as a module, loaded once and registered (grade.py --jobs pickles its functions by name)."""
    name = "scripts_grade"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "scripts" / "grade.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def find(nb, grade_id):
    """The index of the cell with this nbgrader grade_id."""
    hits = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(hits) == 1, f"no single cell with grade_id {grade_id!r} in the solution: update autograde_tests/faults"
    return hits[0]


def quick(nb):
    """A copy without the ungraded cells after the last graded one."""
    nb = copy.deepcopy(nb)
    last = max(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    nb.cells = nb.cells[:last + 1] + [c for c in nb.cells[last + 1:] if c.metadata.get("nbgrader")]
    return nb


def mistake(name):
    return lambda sol: with_mistake(sol, *MISTAKES[name][:2])


def with_(name):
    """A quick copy of the solution with one of the pipeline test's named mistakes."""
    return lambda solution: quick(mistake(name)(solution))


def append(grade_id, code, base=quick):
    """Add code at the end of one cell (a student's own lines in a solution cell)."""
    def build(solution, release=None):
        nb = base(solution)
        nb.cells[find(nb, grade_id)].source += "\n" + code
        return nb
    return build


def prepend(grade_id, code):
    def build(solution, release=None):
        nb = quick(solution)
        cell = nb.cells[find(nb, grade_id)]
        cell.source = code + "\n" + cell.source
        return nb
    return build


def edit(grade_id, change, base=mistake("alpha_bar_cumsum")):
    """A wrong solution whose test cell `grade_id` a student changed with change(nb, index)."""
    def build(solution, release=None):
        nb = quick(base(solution))
        change(nb, find(nb, grade_id))
        return nb
    return build


def _delete(nb, i):
    del nb.cells[i]


def _edit_source(nb, i):
    nb.cells[i].source = "pass  # no test here"


def _to_markdown(nb, i):
    nb.cells[i] = nbformat.v4.new_markdown_cell(nb.cells[i].source, metadata=nb.cells[i].metadata, id=nb.cells[i].id)


def _duplicate(nb, i):
    twin = copy.deepcopy(nb.cells[i])
    twin.id = "twin-of-" + twin.id
    nb.cells.insert(0, twin)  # a copy run before any function exists: only the last copy may be graded


def _flip_flags(nb, i):
    nb.cells[i].metadata.nbgrader.update(grade=False, locked=False, points=100)


PRINTS_MEGABYTES = "print('x' * 3_000_000)\nfor i in range(20_000):\n    print(i)"
TAMPER_REFERENCE = """
import course_lib.forward
course_lib.forward.add_noise = lambda x0, t, noise, schedule: q_sample(x0, t, noise, schedule.alpha_bar)
"""
TAMPER_CHECKS = """
import autograde_tests.checks as checks
checks.check_ddpm_step = lambda *args, **kwargs: None
"""

FAULTS = {
    "solution": (lambda sol, rel: sol, 17.0, None),
    "blank": (lambda sol, rel: quick(rel), 0.0, None),
    "endless-loop": (append("linear_betas_solution", "while True:\n    pass"), 17.0, "time limit"),
    "raises": (prepend("q_sample_solution", "raise RuntimeError('a bug before q_sample is defined')"), 13.0, None),
    "deleted-test-cell": (edit("q_sample_matches_closed_form", _delete, base=lambda s: s), 17.0, "deleted"),
    "edited-test-cell": (edit("alpha_bar_is_cumprod", _edit_source), 16.0, "edited"),
    "retyped-test-cell": (edit("alpha_bar_is_cumprod", _to_markdown), 16.0, "changed from code to markdown"),
    "duplicated-test-cell": (edit("alpha_bar_is_cumprod", _duplicate), 16.0, "appears 2 times"),
    "flipped-flags": (edit("alpha_bar_is_cumprod", _flip_flags), 16.0, None),
    "corrupt-file": (lambda sol, rel: b"\x89PNG\r\n\x1a\n not a notebook at all", 0.0, "not a readable notebook"),
    "json-not-notebook": (lambda sol, rel: b'{"cells": "nope"}', 0.0, "not a readable notebook"),
    "prints-megabytes": (append("linear_betas_solution", PRINTS_MEGABYTES), 17.0, "printed too much"),
    "allocates-too-much": (append("linear_betas_solution", "big = torch.empty(2**31, dtype=torch.float64)  # 16 GB"),
                           17.0, "memory limit"),
    "kernel-exit": (append("q_sample_solution", "import os\nos._exit(1)"), 0.0, "autograde failed"),
    "segfault": (append("q_sample_solution", "import ctypes\nctypes.string_at(0)"), 0.0, "autograde failed"),
    "tamper-reference": (append("q_sample_solution", TAMPER_REFERENCE, base=with_("q_sample_no_sqrt")),
                         4.0, "assigns to course_lib.forward.add_noise"),
    "tamper-allclose": (append("linear_betas_solution", "torch.allclose = lambda *args, **kwargs: True"), 0.0,
                        "assigns to torch.allclose"),
    "tamper-checks": (append("ddpm_step_solution", TAMPER_CHECKS, base=with_("x0_pred_alpha_t")),
                      11.0, "imports autograde_tests"),
    "q-sample-no-sqrt": (lambda sol, rel: with_("q_sample_no_sqrt")(sol), 13.0, None),
    "l-simple-sum": (lambda sol, rel: with_("l_simple_sum")(sol), 15.0, None),
}


def write_submission(root, assignment, student, content):
    """Put a fault's notebook (or raw bytes) where nbgrader expects student's submission."""
    folder = root / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{assignment}.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        nbformat.write(content, path)
    return path
