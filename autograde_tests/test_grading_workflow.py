"""The instructor's workflow, scripts/grade.py, step by step in a temporary course root.

collect from an LMS folder (zip_collect's file-name pattern), autograde, feedback without hidden tests (nbgrader#917,
tracebacks included), export, summary, and nbgrader's exchange round trip (release, fetch, submit, collect) with a
temporary exchange root. Two students: s1 hands in the solution, s2 one visible and one hidden-only mistake.
"""
import csv
import getpass
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograde_tests.faults import load_grade_script, quick
from autograde_tests.pipeline import copy_course, with_mistake
from autograde_tests.test_assignment1_pipeline import MISTAKES

ASSIGNMENT = "assignment1"
pytestmark = [pytest.mark.timeout(600),  # the first test also pays for the module's shared batch
              pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]  # inside nbgrader's api
grade = load_grade_script()

# passes the visible check (T = 1000) and fails the hidden ones (other T)
HIDDEN_ONLY = ("return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
               "return torch.linspace(beta_start, beta_end, 1000, dtype=torch.float64)[:T]")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = copy_course(tmp_path_factory.mktemp("course"))
    grade.release(root, ASSIGNMENT)
    solution = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    lms = tmp_path_factory.mktemp("lms-download")
    nbformat.write(quick(solution), lms / "s1_assignment1.ipynb")
    nbformat.write(quick(with_mistake(with_mistake(solution, *MISTAKES["alpha_bar_cumsum"][:2]), *HIDDEN_ONLY)),
                   lms / "s2_assignment1.ipynb")
    (lms / "s3_notes.txt").write_text("not a submission")
    nbformat.write(quick(solution), lms / "no-student-id.ipynb")
    grade.collect(root, ASSIGNMENT, lms)
    problems = grade.autograde(root, ASSIGNMENT)
    return root, problems


def test_collect_follows_the_file_name_pattern(course):
    root, problems = course
    assert sorted(p.name for p in (root / "submitted").iterdir()) == ["s1", "s2"]
    assert (root / "submitted" / "s2" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").exists()
    assert problems == {"s1": [], "s2": []}


def test_export_writes_one_row_per_student(course):
    root, _ = course
    with open(grade.export(root, ASSIGNMENT), newline="") as f:
        rows = {r["student_id"]: (float(r["score"]), r["status"]) for r in csv.DictReader(f)
                if r["assignment"] == ASSIGNMENT}
    assert rows == {"s1": (17.0, "graded"), "s2": (15.0, "graded")}


def test_feedback_has_no_hidden_tests(course):
    root, _ = course
    autograded = (root / "autograded" / "s2" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    assert "hidden=True" in autograded, "precondition: nbgrader keeps hidden tests in the autograded notebook"
    grade.feedback(root, ASSIGNMENT)
    hidden = grade.hidden_lines(root, ASSIGNMENT)
    assert "check_linear_betas(linear_betas, hidden=True)" in hidden
    for student in ["s1", "s2"]:
        text = grade.html_text(root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html")
        leaked = [line for line in hidden | {"HIDDEN TESTS", "hidden=True", "checks.py"} if line in text]
        assert not leaked, f"{student}'s feedback shows hidden tests: {leaked}"
    text = grade.html_text(root / "feedback" / "s2" / ASSIGNMENT / f"{ASSIGNMENT}.html")
    assert "HiddenTestFailed" in text, "a hidden failure should be reported, without its details"
    assert "a cumulative product (torch.cumprod)" in text, "the visible check's teaching message was lost"
    assert "check_alpha_bar_from_betas(alpha_bar_from_betas)" in text, "the visible test source was lost"


def test_summary_ranks_the_failed_checks(course):
    root, _ = course
    table = {row["check"]: row for row in grade.summary(root, ASSIGNMENT)}
    assert table["alpha_bar_is_cumprod"]["failed"] == 1 and table["linear_betas_matches_reference"]["failed"] == 1
    assert table["q_sample_matches_closed_form"]["failed"] == 0
    assert all(row["attempted"] == 2 for row in table.values())
    assert "cumulative product" in table["alpha_bar_is_cumprod"]["most common failure"]
    assert "a hidden test of linear_betas failed" in table["linear_betas_matches_reference"]["most common failure"]
    out = root / "reports" / ASSIGNMENT
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "| check | points | attempted | failed |" in (out / "summary.md").read_text()


def test_exchange_round_trip(course, tmp_path, monkeypatch):
    root, _ = course
    exchange, home = tmp_path / "exchange", tmp_path / "student-home"
    exchange.mkdir(mode=0o777)
    home.mkdir()
    monkeypatch.setenv("NBGRADER_EXCHANGE", str(exchange))
    grade.release(root, ASSIGNMENT, exchange=True)
    student = [sys.executable, "-m", "nbgrader"]
    options = ["--course", "diffusion-course", f"--Exchange.root={exchange}"]
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    for step in (["fetch_assignment", ASSIGNMENT], ["submit", ASSIGNMENT]):
        result = subprocess.run([*student, *step, *options], cwd=home, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"nbgrader {step[0]} failed:\n{result.stdout}{result.stderr}"
    assert (home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").exists()
    grade.collect(root, ASSIGNMENT)
    collected = root / "submitted" / getpass.getuser() / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert collected.exists(), f"nbgrader collect did not bring back {collected}"
    assert nbformat.read(collected, as_version=4).cells == nbformat.read(home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                                                                         as_version=4).cells
