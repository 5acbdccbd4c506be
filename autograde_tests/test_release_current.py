"""Each committed student notebook, notebooks/<assignment>/<assignment>.ipynb, is what nbgrader generates now.

Regenerate it after editing solutions/<assignment>/ (from the repo root, then strip outputs), e.g.
    nbgrader generate_assignment assignment1 --force && nbstripout --keep-id notebooks/assignment1/assignment1.ipynb
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (REPO / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())


def cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.get("id"), c.source, c.metadata.get("nbgrader")) for c in nb.cells]


def test_every_assignment_is_covered():
    assert {"assignment1", "assignment2"} <= set(ASSIGNMENTS)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_release_is_current(tmp_path, assignment):
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)
    shutil.copytree(REPO / "solutions", tmp_path / "solutions")
    # nbgrader starts `alembic` by name: take it from this Python's environment, activated or not
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fresh = cells(tmp_path / "notebooks" / assignment / f"{assignment}.ipynb")
    committed = cells(REPO / "notebooks" / assignment / f"{assignment}.ipynb")
    assert committed == fresh, (f"notebooks/{assignment}/{assignment}.ipynb is stale: regenerate it from "
                                f"solutions/{assignment}/ (see this file's docstring)")
