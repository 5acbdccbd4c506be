"""Every lecture notebook notebooks/NN_*.ipynb runs top to bottom without an error, headless, in its budget.

The budget is the course's: at most 3 minutes per notebook with default settings on a 2-core CPU.
Each notebook's wall time is printed (shown even without -s) and recorded as a JUnit property.
"""
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
BUDGET_S = 180  # per notebook
EXECUTED_DIR = REPO / "build" / "executed"  # scripts/build_site.py renders these copies instead of running again
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # Jupyter's own: headless, and figures become outputs


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks named NN_*.ipynb found in {NOTEBOOK_DIR}"


@pytest.mark.timeout(BUDGET_S + 120)  # room for the kernel to start and stop
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, capsys, record_property):
    monkeypatch.setenv("MPLBACKEND", INLINE_BACKEND)  # the kernel inherits this environment: no display needed
    # course_lib importable from notebooks/ even where the repo is not pip-installed (course.py installs it)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    deadline = time.monotonic() + BUDGET_S
    client = NotebookClient(
        nb,
        kernel_name="python3",  # jupyter_client runs the native python3 kernel with this interpreter (the venv's)
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd = notebooks/
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),  # one budget for the whole notebook
    )
    start = time.monotonic()
    try:
        client.execute()
    except CellTimeoutError:
        pytest.fail(f"{path.name} ran past its {BUDGET_S} s budget; make its defaults lighter")
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    finally:
        elapsed = time.monotonic() - start
        record_property("wall_time_s", round(elapsed, 1))
        with capsys.disabled():
            print(f"\n[notebook time] {path.name}: {elapsed:.1f} s (budget {BUDGET_S} s)")
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s, over the {BUDGET_S} s budget"
    # Keep the executed copy for the course's web site (scripts/build_site.py reuses it while it is current).
    nb.metadata["course"] = {"mpl_backend": INLINE_BACKEND}  # the mark build_site.py looks for: figures are outputs
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED_DIR / path.name)
