"""Grading for the nbgrader assignments, and the tests that prove it holds.

The trust boundary (docs/instructor.md, "What the grader defends"):

| runs in the student's sandboxed kernel | runs in the grader's process |
| --- | --- |
| `kernel_side.py`: decodes a call's plain-data arguments, calls the student's function, publishes what came back | `judge.py`: nbgrader's Execute step; runs each check here and writes the verdict into the notebook |
| (nothing else of this package is visible there) | `sandbox.py`: the bubblewrap sandbox and the read-only view of course_lib the kernel sees |
| | `checks.py`, `checks_ddim.py`: the checks (generators of calls), references and messages; `harness.py` drives them |
| | `integrity.py`: static scan, copy report, restoring graded cells, feedback clean-up |

In a student's own kernel (JupyterLab, `nbgrader validate`) the same checks run there, against course_lib, through
`harness.run_local`. Tests: `test_*` here; `faults/`, `redteam/` and `equivalents.py` hold their submissions.
"""
