"""The committed student notebook, notebooks/assignment1/assignment1.ipynb, is what nbgrader generates now.

Regenerate it after editing solutions/assignment1/ (from the repo root, then strip outputs):
    nbgrader generate_assignment assignment1 --force && nbstripout --keep-id notebooks/assignment1/assignment1.ipynb
"""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.get("id"), c.source, c.metadata.get("nbgrader")) for c in nb.cells]


def test_committed_release_is_current(tmp_path):
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)
    shutil.copytree(REPO / "solutions", tmp_path / "solutions")
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "assignment1", "--force"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fresh = cells(tmp_path / "notebooks" / "assignment1" / "assignment1.ipynb")
    committed = cells(REPO / "notebooks" / "assignment1" / "assignment1.ipynb")
    assert committed == fresh, ("notebooks/assignment1/assignment1.ipynb is stale: regenerate it from "
                                "solutions/assignment1/ (see this file's docstring)")
