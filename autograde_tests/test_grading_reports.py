"""Grading reports that tell the truth: a batch of six submissions of Assignment 1, graded once with `--jobs 2`.

solution (full marks), blank (the release handed in), corrupt (not a notebook), loop (an endless loop inside the
graded function cosine_betas, which its own cell also calls at the top level), cumsum (a real mistake: a cumulative
sum instead of a product) and flagged (patches torch.allclose). The export must give each its status and reason,
the summary must count only real failures, every student must get a feedback page or a written reason, feedback must
name test cells, timeouts (function and limit) and render math without a network; re-grading one student must touch
and regenerate only that student's files.
"""
import csv
import re
import shutil
import subprocess

import nbformat
import pytest

from autograde_tests import integrity
from autograde_tests.faults import find, load_grade_script, quick, write_submission
from autograde_tests.pipeline import copy_course, with_mistake
from autograde_tests.test_assignment1_pipeline import MISTAKES

ASSIGNMENT = "assignment1"
TIMEOUT = 12  # seconds per cell: far above any real cell of these notebooks, short for the endless loop
pytestmark = [pytest.mark.timeout(900),  # the first test also pays for the module's shared batch
              pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]  # inside nbgrader's api
grade = load_grade_script()

LOOP = ("betas = [min(1 - f(t + 1) / f(t), max_beta) for t in range(T)]", "while True:  # never ends\n        pass")


def looping(solution):
    nb = quick(with_mistake(solution, *LOOP))
    nb.cells[find(nb, "cosine_betas_solution")].source += "\n\ncosine_betas(10)  # a call at the top level too"
    return nb


def flagged(solution):
    nb = quick(solution)
    nb.cells[find(nb, "linear_betas_solution")].source += "\ntorch.allclose = lambda *args, **kwargs: True"
    return nb


SUBMISSIONS = {
    "solution": lambda sol, rel: quick(sol),
    "blank": lambda sol, rel: quick(rel),
    "corrupt": lambda sol, rel: b"\x89PNG\r\n\x1a\n not a notebook",
    "loop": lambda sol, rel: looping(sol),
    "cumsum": lambda sol, rel: quick(with_mistake(sol, *MISTAKES["alpha_bar_cumsum"][:2])),
    "flagged": lambda sol, rel: flagged(sol),
}
EXPECTED = {  # student: (status, a part of the reason, score)
    "solution": ("graded", "", 17.0),
    "blank": ("blank", "no solution cell was changed", 0.0),
    "corrupt": ("unreadable", "is not a readable notebook", 0.0),
    "loop": ("timed out", "ran past the time limit", 15.0),
    "cumsum": ("graded", "", 16.0),
    "flagged": ("flagged", "assigns to torch.allclose", 0.0),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = copy_course(tmp_path_factory.mktemp("course"))
    grade.release(root, ASSIGNMENT)
    solution = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    for name, build in SUBMISSIONS.items():
        write_submission(root, ASSIGNMENT, name, build(solution, release))
    problems = grade.autograde(root, ASSIGNMENT, jobs=2, timeout=TIMEOUT)
    grade.feedback(root, ASSIGNMENT)
    return root, problems


def export_rows(root):
    with open(grade.export(root, ASSIGNMENT), newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}


def page(root, student):
    return root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"


def flat(text):
    return " ".join(text.split())


def test_export_gives_every_student_a_status_and_reason(batch):
    root, _ = batch
    rows = export_rows(root)
    assert set(rows) == set(SUBMISSIONS)
    for student, (status, reason, score) in EXPECTED.items():
        assert (rows[student]["status"], float(rows[student]["score"])) == (status, score), rows[student]
        assert reason in rows[student]["reason"], f"{student}: {rows[student]['reason']!r}"
    assert rows["solution"]["reason"] == "" and rows["cumsum"]["reason"] == ""
    assert "check_cosine_betas" in rows["loop"]["reason"] and f"{TIMEOUT} s" in rows["loop"]["reason"]


def test_summary_counts_real_failures_only(batch):
    root, _ = batch
    table = {row["check"]: row for row in grade.summary(root, ASSIGNMENT)}
    for row in table.values():
        assert "not implemented" not in row["most common failure"], row
        assert row["attempted"] == 4, f"solution, loop, cumsum and flagged attempted every check: {row}"
    cumprod = table["alpha_bar_is_cumprod"]
    assert (cumprod["failed"], cumprod["seen"]) == (1, 1)
    assert "a cumulative product (torch.cumprod), not a sum" in cumprod["most common failure"]
    cosine = table["cosine_betas_clipped_matches_reference"]
    assert cosine["failed"] == 1 and "stopped after" in cosine["most common failure"]
    assert table["linear_betas_matches_reference"]["failed"] == 0, "the flagged student's code passes the check"
    assert table["q_sample_matches_closed_form"]["failed"] == 0
    ranked = list(table)
    assert set(ranked[:2]) == {"alpha_bar_is_cumprod", "cosine_betas_clipped_matches_reference"}
    text = (root / "reports" / ASSIGNMENT / "summary.md").read_text()
    assert "- blank: blank" in text and "- corrupt: unreadable" in text, "left-out submissions must be listed"
    assert "| check | points | attempted | failed |" in text
    assert "Without a feedback page" in text and "- corrupt:" in text.split("Without a feedback page")[1]


def test_timeout_feedback_names_the_function_and_the_limit(batch):
    root, problems = batch
    text = flat(grade.html_text(page(root, "loop")))
    assert (f"check_cosine_betas: stopped after {TIMEOUT} s (the per-cell time limit) while running cosine_betas"
            in text), "the test cell's verdict should name the check, the function and the limit"
    assert (f"cosine_betas_solution: stopped after {TIMEOUT} s (the per-cell time limit) while running cosine_betas"
            in text), "an ordinary cell's time-out should name the cell, the limit and the function"
    assert "CellTimeoutError" not in text
    assert sum("ran past the time limit" in p for p in problems["loop"]) == 2, problems["loop"]


def test_every_student_has_a_feedback_page_or_a_reason(batch):
    root, _ = batch
    for student in SUBMISSIONS:
        folder = root / "feedback" / student / ASSIGNMENT
        note = folder / grade.NO_FEEDBACK
        if student == "corrupt":
            assert not page(root, student).exists() and note.exists()
            assert "unreadable" in note.read_text() and "not a readable notebook" in note.read_text()
        else:
            assert page(root, student).exists() and not note.exists(), student


def test_feedback_names_test_cells_and_shows_whole_messages(batch):
    root, _ = batch
    html = page(root, "cumsum").read_text()
    text = flat(grade.html_text(page(root, "cumsum")))
    assert ">Test cell</a>" not in html, "the table of contents should name every test cell"
    assert "Test cell alpha_bar_is_cumprod (Score: 0.0 / 1.0)" in text
    assert ("Test cell alpha_bar_is_cumprod: check_alpha_bar_from_betas (tests alpha_bar_from_betas); score 0 / 1, "
            "failed" in text)
    assert "Test cell q_sample_matches_closed_form: check_q_sample (tests q_sample); score 2 / 2, passed" in text
    assert "shrinks: a cumulative product (torch.cumprod), not a sum" in text
    assert integrity.WRAP_CSS in html, "long messages must wrap, not run off the page"


def test_feedback_math_renders_offline(batch):
    root, _ = batch
    pages = sorted((root / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert len(pages) == 5
    for path in pages:
        html = path.read_text()
        assert not integrity.REMOTE_SCRIPT.search(html), f"{path} loads a script from the network"
        assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", html), f"{path} loads a stylesheet from the network"
        assert "cdnjs" not in html and integrity.OFFLINE_MARK in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium to render the page")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                          "--dump-dom", page(root, "solution").as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    body = re.sub(r"(?s)<script.*?</script>", "", dom)
    assert body.count("<math") >= 10, "MathJax did not typeset the markdown's math (offline)"


def test_regrading_one_student_touches_and_regenerates_only_that_student(batch, capsys):
    root, _ = batch
    rows_before = export_rows(root)
    others = {p: p.stat().st_mtime_ns for folder in ("submitted", "autograded", "feedback")
              for p in (root / folder).rglob("*") if p.is_file() and p.relative_to(root / folder).parts[0] != "cumsum"}
    old_page = page(root, "cumsum").stat().st_mtime_ns
    solution = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    write_submission(root, ASSIGNMENT, "cumsum", quick(solution))  # a corrected upload
    capsys.readouterr()
    grade.autograde(root, ASSIGNMENT, student="cumsum", timeout=TIMEOUT)
    printed = capsys.readouterr().out
    assert "re-graded cumsum only (score 16 / 17 -> 17 / 17)" in printed, printed
    assert f"regenerated for cumsum: feedback/cumsum/{ASSIGNMENT}/, grades/{ASSIGNMENT}.csv" in printed, printed
    assert {p: p.stat().st_mtime_ns for p in others} == others, "re-grading one student touched another's files"
    assert page(root, "cumsum").stat().st_mtime_ns != old_page, "the student's feedback was not regenerated"
    assert "not a sum" not in grade.html_text(page(root, "cumsum"))
    with open(root / "grades" / f"{ASSIGNMENT}.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(rows.pop("cumsum")["score"]) == 17.0
    rows_before.pop("cumsum")
    assert rows == rows_before, "another student's grade row changed"
