"""nbgrader configuration for the course (run nbgrader, or scripts/grade.py, from the repository root).

Source notebooks (with solutions and hidden tests) live in solutions/<assignment>/, and
`nbgrader generate_assignment assignment1` writes the student version to notebooks/assignment1/.
The gradebook (gradebook.db) and the submitted/, autograded/ and feedback/ folders are created next to
this file when grading; autograde_tests/ runs the whole pipeline in a temporary copy instead.
Grading runs every submission's kernel in a sandbox (autograde_tests/sandbox.py) and computes the verdicts outside it
(autograde_tests/judge.py); docs/instructor.md describes what is defended and how. COURSE_GRADING_SANDBOX=0 turns
the sandbox off (scripts/grade.py --no-sandbox sets it and reports it); without it, and without bwrap, autograde stops.
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
from autograde_tests import integrity, judge, kernel_side  # noqa: E402

c.CourseDirectory.course_id = "diffusion-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# Kernel and time limits for executing notebooks (validate, autograde).
c.Execute.kernel_name = "python3"
c.Execute.timeout = 60  # seconds per cell; an endless loop fails its cell instead of hanging grading
c.ExecutePreprocessor.timeout = 60
# Autograding: the kernel runs in the sandbox (limits on memory, processes, CPU time: sandbox.LIMITS) and caps what
# one cell may print (kernel_side.install). Without the sandbox the kernel sets its own memory limit instead.
SANDBOX = os.environ.get("COURSE_GRADING_SANDBOX", "1") != "0"
KERNEL_MEMORY_GB = 4.0  # address space, not RSS: torch alone maps ~1 GB
c.JudgedExecute.sandbox = SANDBOX
c.Execute.extra_arguments = [
    f"--IPKernelApp.exec_lines={kernel_side.install_line(REPO, None if SANDBOX else KERNEL_MEMORY_GB)}"]

# What a solution region becomes in the student's notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograde. Sanitizing: graded cells get their flags and points back from the gradebook before nbgrader checks
# checksums (a flipped flag would crash it, nbgrader#1331), and deleted graded cells are put back
# (nbgrader#1083). Executing: judge.JudgedExecute runs the notebook in the sandboxed kernel and writes the verdict of
# every graded test cell, computed in this process; outputs longer than integrity.MAX_OUTPUT_CHARS are truncated.
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput", "nbgrader.preprocessors.DeduplicateIds",
    integrity.restore_graded_cells,
    "nbgrader.preprocessors.OverwriteKernelspec", "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata"]
c.Autograde.autograde_preprocessors = [
    judge.JudgedExecute, "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
    integrity.limit_output_size,
    "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata"]
c.LimitOutput.max_lines = 1000

# Feedback never shows hidden tests: their source, outputs and tracebacks are stripped (nbgrader#917). Every test cell
# gets a heading naming it, its checks and its result, and long messages wrap instead of being cut off
# (integrity.name_test_cells, after the CSS step it adds to); scripts/grade.py feedback then inlines MathJax from an
# installed package (integrity.finish_feedback_page), so that math renders offline.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades", integrity.strip_hidden_tests, integrity.sanitize_feedback,
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor", integrity.name_test_cells]

# Collecting from an LMS download (scripts/grade.py collect): files named <student>_<anything>.ipynb, e.g.
# s1234_assignment1.ipynb or s1234_attempt_2026-11-23.ipynb, become submitted/<student>/<assignment>/<notebook>.ipynb.
c.ZipCollectApp.collector_plugin = "nbgrader.plugins.FileNameCollectorPlugin"
# The expression is matched against the file's whole path, hence the leading ".*/".
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)_(?P<file_id>[^/]+)$"
c.FileNameCollectorPlugin.valid_ext = [".ipynb"]

# nbgrader's exchange (release_assignment, fetch_assignment, submit, collect): one folder all users can write.
# On a JupyterHub the default /srv/nbgrader/exchange is the usual choice (docs/instructor.md).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
