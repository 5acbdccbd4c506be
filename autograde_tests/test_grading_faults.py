"""The grader survives real submissions: a batch of 20 fault fixtures (autograde_tests/faults), graded once.

Each fixture must get exactly its expected score from nbgrader's gradebook and, where the grader should tell the
instructor something, a problem report that says so; the batch yields exactly 20 grade rows even though two
submissions kill their kernel and two are not notebooks. Built from solutions/assignment1 at test time.
"""
import csv
import time
from pathlib import Path

import nbformat
import pytest
import torch

from autograde_tests import integrity
from autograde_tests.faults import FAULTS, find, load_grade_script, quick, write_submission
from autograde_tests.pipeline import copy_course

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "assignment1"
pytestmark = [pytest.mark.timeout(900),  # the first test also pays for the module's shared batch
              pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]  # inside nbgrader's api
TIMEOUT = 15  # seconds per cell for this batch: far above any real cell, short for the endless loop
grade = load_grade_script()


def scores(root):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.find_assignment(ASSIGNMENT).submissions}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = copy_course(tmp_path_factory.mktemp("course"))
    grade.release(root, ASSIGNMENT)
    solution = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    for name, (build, _, _) in FAULTS.items():
        write_submission(root, ASSIGNMENT, name, build(solution, release))
    start = time.perf_counter()
    problems = grade.autograde(root, ASSIGNMENT, jobs=2, timeout=TIMEOUT)
    print(f"batch of {len(FAULTS)} graded in {time.perf_counter() - start:.0f} s")
    return root, problems, scores(root)


def test_batch_has_twenty_grade_rows(batch):
    root, problems, _ = batch
    assert len(FAULTS) == 20
    with open(grade.export(root, ASSIGNMENT), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT]
    assert sorted(r["student_id"] for r in rows) == sorted(FAULTS), "every submission needs exactly one grade row"
    assert set(problems) == set(FAULTS)


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_gets_its_score_and_report(batch, name):
    root, problems, got = batch
    _, expected, problem = FAULTS[name]
    assert got[name] == expected, f"{name}: score {got[name]}, expected {expected}; problems: {problems[name]}"
    if problem is not None:
        assert any(problem in p for p in problems[name]), f"{name}: no problem mentions {problem!r}: {problems[name]}"
    if name in ("solution", "blank", "q-sample-no-sqrt", "l-simple-sum", "raises"):
        assert problems[name] == [], f"{name} is an ordinary submission, yet: {problems[name]}"


def test_problems_name_the_corrupt_file(batch):
    root, problems, _ = batch
    assert any("submitted/corrupt-file/assignment1/assignment1.ipynb" in p for p in problems["corrupt-file"])
    with open(root / "reports" / ASSIGNMENT / "problems.csv", newline="") as f:
        assert {r["student"] for r in csv.DictReader(f)} >= {"corrupt-file", "kernel-exit", "segfault"}


def test_regrading_one_student_gives_the_same_score_and_touches_no_one_else(batch):
    root, _, before = batch
    others = {p: p.stat().st_mtime_ns for p in root.glob("autograded/*/assignment1/assignment1.ipynb")
              if p.parts[-3] != "q-sample-no-sqrt"}
    grade.autograde(root, ASSIGNMENT, student="q-sample-no-sqrt")
    after = scores(root)
    assert after == before, "re-grading changed a score"
    assert {p: p.stat().st_mtime_ns for p in others} == others, "re-grading one student rewrote another's notebook"


def test_judge_reads_only_plain_data_from_the_kernel():
    """The judge's reading of a probe report: tensors come back as plain torch.Tensor from raw bytes, and anything
    malformed (a pickle, a size that does not match the shape, an unknown dtype) is refused, not executed."""
    import base64
    import json
    import pickle

    from autograde_tests.judge import ProbeFailed, read_report
    from autograde_tests.kernel_side import PROBE_MIME, encode

    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    value = torch.arange(6.0).reshape(2, 3).as_subclass(Liar)
    good = {"output_type": "display_data", "data": {PROBE_MIME: json.dumps({"value": encode(value), "mutated": []})}}
    report = read_report([good], timeout=5)
    assert type(report["value"]) is torch.Tensor and torch.equal(report["value"], torch.arange(6.0).reshape(2, 3))
    bad_values = [{"__tensor__": ["float32", [5], base64.b64encode(b"\0" * 8).decode(), False]},
                  {"__tensor__": ["object", [1], "", False]},
                  {"__pickle__": base64.b64encode(pickle.dumps(print)).decode()}]
    for bad in bad_values:
        out = {"output_type": "display_data", "data": {PROBE_MIME: json.dumps({"value": bad})}}
        with pytest.raises(ProbeFailed):
            read_report([out], timeout=5)
    with pytest.raises(ProbeFailed, match="time limit"):
        read_report([{"output_type": "error", "ename": "CellTimeoutError", "evalue": "", "traceback": []}], timeout=5)


def test_static_scan_flags_tampering_but_not_the_solution():
    solution = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    locked = {c.metadata["nbgrader"]["grade_id"] for c in solution.cells
              if c.metadata.get("nbgrader", {}).get("locked")}
    assert integrity.scan_notebook(solution, locked) == []
    for code, message in [("torch.allclose = lambda *a, **k: True", "assigns to torch.allclose"),
                          ("import sys\nsys.modules['autograde_tests.checks'] = None", "uses .modules"),
                          ("from course_lib import forward as fw\nfw.add_noise = print", "assigns to fw.add_noise"),
                          ("get_ipython().events.callbacks.clear()", "uses get_ipython"),
                          ("setattr(torch, 'allclose', print)", "uses setattr")]:
        assert any(message in m for _, m in integrity.scan_source(code)), f"not flagged: {code!r}"
    assert integrity.scan_source("x = torch.zeros(3)\nx[0] = 1.0\nmodel.weight = None") == []


def test_quick_fixtures_keep_every_graded_cell():
    solution = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    graded = [c.metadata["nbgrader"]["grade_id"] for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded and all(find(quick(solution), g) >= 0 for g in graded)
