"""nbgrader configuration for the course (run nbgrader, or scripts/grade.py, from the repository root).

Source notebooks (with solutions and hidden tests) live in solutions/<assignment>/, and
`nbgrader generate_assignment assignment1` writes the student version to notebooks/assignment1/.
The gradebook (gradebook.db) and the submitted/, autograded/ and feedback/ folders are created next to
this file when grading; autograde_tests/ runs the whole pipeline in a temporary copy instead.
The grading safeguards (autograde_tests/integrity.py) are described in docs/instructor.md.
"""
import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

# The repo that holds autograde_tests/: $COURSE_ROOT if set, else where the installed course_lib lives
# (pip install -e . installs it from the repo), so a copy of this file in a temporary course root works too.
REPO = os.environ.get("COURSE_ROOT")
if REPO is None:
    import course_lib
    REPO = str(Path(course_lib.__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from autograde_tests import integrity  # noqa: E402

c.CourseDirectory.course_id = "diffusion-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# Kernel and time limits for executing notebooks (validate, autograde).
c.Execute.kernel_name = "python3"
c.Execute.timeout = 60  # seconds per cell; an endless loop fails its cell instead of hanging grading
c.ExecutePreprocessor.timeout = 60
# Before any student code, the grading kernel limits its address space (a notebook that allocates far too
# much gets MemoryError in that cell, the machine stays up), caps what one cell may print, and snapshots
# torch, course_lib and the checks so that replacing them is undone and fails the checks (integrity.py).
KERNEL_MEMORY_GB = 4.0  # address space, not RSS: torch alone maps ~1 GB
c.Execute.extra_arguments = [f"--IPKernelApp.exec_lines={integrity.kernel_guard_line(REPO, KERNEL_MEMORY_GB)}"]

# What a solution region becomes in the student's notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograde. Sanitizing: graded cells get their flags and points back from the gradebook before nbgrader checks
# checksums (a flipped flag would crash it, nbgrader#1331), and deleted graded cells are put back
# (nbgrader#1083). Executing: outputs longer than integrity.MAX_OUTPUT_CHARS are truncated, as are many lines.
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput", "nbgrader.preprocessors.DeduplicateIds",
    integrity.restore_graded_cells,
    "nbgrader.preprocessors.OverwriteKernelspec", "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata"]
c.Autograde.autograde_preprocessors = [
    "nbgrader.preprocessors.Execute", "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
    integrity.limit_output_size,
    "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata"]
c.LimitOutput.max_lines = 1000

# Feedback never shows hidden tests: their source, outputs and tracebacks are stripped (nbgrader#917).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades", integrity.strip_hidden_tests,
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]

# Collecting from an LMS download (scripts/grade.py collect): files named <student>_<anything>.ipynb, e.g.
# s1234_assignment1.ipynb or s1234_attempt_2026-11-23.ipynb, become submitted/<student>/<assignment>/<notebook>.ipynb.
c.ZipCollectApp.collector_plugin = "nbgrader.plugins.FileNameCollectorPlugin"
# The expression is matched against the file's whole path, hence the leading ".*/".
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)_(?P<file_id>[^/]+)$"
c.FileNameCollectorPlugin.valid_ext = [".ipynb"]

# nbgrader's exchange (release_assignment, fetch_assignment, submit, collect): one folder all users can write.
# On a JupyterHub the default /srv/nbgrader/exchange is the usual choice (docs/instructor.md).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
