"""What the assignment pipeline tests share: a temporary course root, nbgrader runs, and scores from the Gradebook.

Each test module makes a `Course(tmp_path, assignment)`: it copies nbgrader_config.py and solutions/ into the root
and generates the release there, so the repo itself is never written to. Scores are read from nbgrader's
Gradebook, never from exit codes (`nbgrader validate` exits 0 on failure, nbgrader#1908).
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
AUTOGRADE_SECONDS = 60  # per submission, on a 2-core CPU


def nbgrader(root, *args):
    """Run `python -m nbgrader ARGS` in the course root; fail with its output when it exits non-zero."""
    env = {**os.environ, "COURSE_ROOT": str(REPO),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           # nbgrader starts `alembic` by name: take it from this Python's environment, activated or not
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def with_mistake(solution, old, new):
    """A copy of the notebook `solution` with the one occurrence of the line `old` replaced by `new`."""
    nb = nbformat.from_dict(solution)
    hits = [cell for cell in nb.cells if old in cell.source]
    assert len(hits) == 1 and hits[0].source.count(old) == 1, f"{old!r} should occur once in the solution"
    hits[0].source = hits[0].source.replace(old, new)
    return nb


def copy_course(root):
    """Make `root` a course root: nbgrader_config.py and solutions/ copied from the repo. Returns root as a Path."""
    root = Path(root)
    shutil.copy(REPO / "nbgrader_config.py", root)
    shutil.copytree(REPO / "solutions", root / "solutions")
    return root


class Course:
    """A fresh course root with `assignment` released; `autograde` submits a notebook and returns its score."""

    def __init__(self, root, assignment, report=print):
        self.root, self.assignment, self.report = copy_course(root), assignment, report
        nbgrader(self.root, "generate_assignment", assignment, "--force")

    def notebook(self, folder):
        """The assignment's notebook in `folder` ("solutions" or "notebooks", the release)."""
        return nbformat.read(self.root / folder / self.assignment / f"{self.assignment}.ipynb", as_version=4)

    def autograde(self, student, nb):
        """Submit `nb` as `student`, autograde it within AUTOGRADE_SECONDS, and return (score, max_score)."""
        folder = self.root / "submitted" / student / self.assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{self.assignment}.ipynb")
        start = time.perf_counter()
        nbgrader(self.root, "autograde", self.assignment, "--student", student, "--force")
        seconds = time.perf_counter() - start
        self.report(f"[autograde time] {self.assignment} {student}: {seconds:.1f} s (budget {AUTOGRADE_SECONDS} s)")
        assert seconds <= AUTOGRADE_SECONDS, f"autograding {student} took {seconds:.0f} s"
        return self.score(student)

    def score(self, student):
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            submission = gb.find_submission(self.assignment, student)
            return submission.score, submission.max_score


def uncaptured_print(request):
    """A print that shows past pytest's output capture (so timings reach CI's log without -s)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def report(line):
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)

    return report if capture is not None else print
