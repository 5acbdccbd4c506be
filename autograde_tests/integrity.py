"""Grading integrity: a submission earns only the points its own code earns.

Three layers, each small and each with known limits (docs/instructor.md, "What the grader defends"):

1. `scan_notebook`: a static scan of the cells a student can edit. Code that reaches into the grader
   (assigns to an attribute of torch, course_lib or the checks; touches sys.modules, builtins,
   get_ipython, frames, exec/eval, ctypes, ...) is flagged; scripts/grade.py then scores every graded
   cell after the first flagged cell 0 and marks it for manual review.
2. `install_kernel_guard` (run in the grading kernel before any student code, from nbgrader_config.py):
   a memory limit (RLIMIT_AS), a per-cell cap on printed output, and a snapshot of the functions the
   checks rely on (torch, course_lib, the check modules, builtins). Before every cell the guard
   restores anything replaced since; `assert_untampered` (called by every check, before and after it
   runs) then fails the check with a message saying what was replaced.
3. Plain-function nbgrader preprocessors: `restore_graded_cells` (sanitize: graded cells keep the
   source's flags and points, unknown grade_ids lose theirs), `limit_output_size` (autograde: long
   outputs are truncated) and `strip_hidden_tests` (feedback: hidden test source and the outputs and
   tracebacks of hidden tests never reach students, nbgrader#917).

This module imports nothing heavy at the top: the grading kernel imports it before the notebook runs.
"""
import ast
import re
import sys

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
TAMPER_MARK = "integrity:"  # every guard failure starts with this, so scripts/grade.py can report it
TRUNCATED_MARK = "[output truncated by the grader:"
MAX_OUTPUT_CHARS = 100_000  # per output in the autograded notebook (and per cell in the kernel)

# --- 1. static scan ------------------------------------------------------------------------------------------

FLAGGED_IMPORTS = {"autograde_tests", "builtins", "ctypes", "gc", "importlib", "inspect", "resource", "signal"}
FLAGGED_NAMES = {"__builtins__", "get_ipython", "globals", "exec", "eval", "compile", "__import__", "setattr",
                 "delattr", "vars"}
FLAGGED_ATTRS = {"modules", "__code__", "__globals__", "__dict__", "__builtins__", "__subclasses__", "f_globals",
                 "f_locals", "f_back", "_getframe", "settrace", "setprofile", "setrlimit", "stdout", "stderr"}
ALWAYS_MODULES = {"torch", "F", "course_lib", "checks", "math", "sys", "os", "np", "numpy"}


def _imported_names(tree):
    """Names bound by import statements (`import torch.nn.functional as F` binds F, `import a.b` binds a)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def _root_name(node):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _parse(source):
    """AST of a cell, with IPython magics and shell lines (%, !) blanked; None if it does not parse."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def scan_source(source, module_names=()):
    """Findings [(line, message)] for one cell's source; module_names: names imported anywhere in the notebook."""
    tree = _parse(source)
    if tree is None:
        return []
    modules = set(module_names) | ALWAYS_MODULES | _imported_names(tree)
    findings = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                full = (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
                if full.split(".")[0] in FLAGGED_IMPORTS:
                    findings.append((line, f"imports {full}"))
        elif isinstance(node, ast.Name) and node.id in FLAGGED_NAMES:
            findings.append((line, f"uses {node.id}"))
        elif isinstance(node, ast.Attribute) and node.attr in FLAGGED_ATTRS:
            findings.append((line, f"uses .{node.attr}"))
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, (ast.Attribute, ast.Subscript)) and _root_name(sub) in modules:
                    findings.append((line, f"assigns to {ast.unparse(sub)}"))
                    break
    return sorted(set(findings))


def student_cells(nb, locked_ids=()):
    """(index, cell) of the code cells a student can change: all but the locked cells of the source."""
    for i, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("cell_type") == "code" and grade_id not in locked_ids:
            yield i, cell


def scan_notebook(nb, locked_ids=()):
    """Findings [(cell index, cell name, line, message)] over a notebook's student cells."""
    modules = set()
    for cell in nb.cells:
        tree = _parse(cell.get("source", "")) if cell.get("cell_type") == "code" else None
        modules |= _imported_names(tree) if tree else set()
    findings = []
    for i, cell in student_cells(nb, locked_ids):
        name = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or cell.get("id") or f"cell {i}"
        findings += [(i, name, line, message) for line, message in scan_source(cell.get("source", ""), modules)]
    return findings


# --- 2. the guard inside the grading kernel ------------------------------------------------------------------

_MISSING = object()
_snapshot = None  # [(name, owner, {key: object}, is_class)]
_modules = {}  # sys.modules entries as they were: {name: module}
_tampered = []  # names found replaced so far, in order
# builtins that IPython itself swaps around each cell (its builtin trap), or that hold the last result
_IPYTHON_BUILTINS = {"_", "__", "___", "input", "get_ipython", "exit", "quit", "display", "help", "copyright",
                     "credits", "license", "dreload"}


def _is_watched_module(name):
    return (name in {"torch", "torch.nn.functional", "torch.testing", "math", "builtins", "course_lib"}
            or name.startswith(("course_lib.", "autograde_tests.")))


def take_snapshot():
    """Remember the functions, classes and modules that checks and references use, as they are now."""
    global _snapshot
    _modules.clear()
    _snapshot = []
    for name, module in list(sys.modules.items()):
        if module is None or not _is_watched_module(name) or name == __name__:
            continue
        _modules[name] = module
        saved = {k: v for k, v in vars(module).items() if (callable(v) or type(v).__name__ == "module")
                 and not (name == "builtins" and k in _IPYTHON_BUILTINS)}
        _snapshot.append((name, module, saved, False))
        for k, v in saved.items():  # classes defined by the course (NoiseSchedule, MLPDenoiser, ...)
            if isinstance(v, type) and getattr(v, "__module__", "") == name and name != "builtins":
                _snapshot.append((f"{name}.{k}", v, dict(vars(v)), True))
    import torch
    _snapshot.append(("torch.Tensor", torch.Tensor, dict(vars(torch.Tensor)), True))


def find_tampering(restore=True):
    """Names replaced since take_snapshot (and restore them); an empty list when nothing was touched."""
    if _snapshot is None:
        take_snapshot()
    changed = []
    for name, module in _modules.items():
        if sys.modules.get(name) is not module:
            changed.append(f"sys.modules[{name!r}]")
            if restore:
                sys.modules[name] = module
    for name, owner, saved, is_class in _snapshot:
        current = vars(owner)
        for key, obj in saved.items():
            if current.get(key, _MISSING) is not obj:
                changed.append(f"{name}.{key}")
                if restore:
                    setattr(owner, key, obj)
        if is_class:
            for key in set(current) - set(saved):
                changed.append(f"{name}.{key}")
                if restore:
                    delattr(owner, key)
    _tampered.extend(n for n in changed if n not in _tampered)
    return changed


def assert_untampered():
    """Raise AssertionError if code in this kernel ever replaced what the checks rely on (and undo it)."""
    find_tampering(restore=True)
    if _tampered:
        shown = ", ".join(_tampered[:5]) + (f" and {len(_tampered) - 5} more" if len(_tampered) > 5 else "")
        raise AssertionError(f"{TAMPER_MARK} this notebook replaced {shown}. Checks compare your functions to "
                             f"course_lib with the originals restored, but from then on every check scores 0 and "
                             f"the instructor reviews the notebook: do not assign to torch, course_lib or the checks")


def guard_checks(namespace):
    """Wrap every check_* function of a checks module so that it calls assert_untampered before and after."""
    import functools

    def guarded(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            assert_untampered()
            result = check(*args, **kwargs)
            assert_untampered()
            return result
        return run

    for name, fn in list(namespace.items()):
        if name.startswith("check_") and callable(fn) and not hasattr(fn, "__wrapped__"):
            namespace[name] = guarded(fn)


class _CappedStream:
    """A stdout/stderr that passes on at most `limit` characters per cell, then one notice."""

    def __init__(self, stream, limit):
        self._stream, self.limit, self.written = stream, limit, 0

    def write(self, text):
        if self.written < self.limit:
            kept = text[:self.limit - self.written]
            self._stream.write(kept)
            if len(kept) < len(text):
                self._stream.write(f"\n{TRUNCATED_MARK} this cell printed more than {self.limit} characters]\n")
        self.written += len(text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install_kernel_guard(memory_gb=4.0, max_output_chars=MAX_OUTPUT_CHARS):
    """Run in the grading kernel before the notebook: memory limit, output cap, snapshot, pre-cell restore."""
    import importlib
    import pkgutil
    import resource

    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # soft = hard: student code cannot raise it
    import torch  # noqa: F401 (imported here so that the snapshot holds the originals)
    import course_lib  # noqa: F401
    import autograde_tests
    for info in pkgutil.iter_modules(autograde_tests.__path__):
        if info.name.startswith("checks"):
            importlib.import_module(f"autograde_tests.{info.name}")
    take_snapshot()
    sys.stdout = _CappedStream(sys.stdout, max_output_chars)
    sys.stderr = _CappedStream(sys.stderr, max_output_chars)

    def before_cell(*args):
        sys.stdout.written = sys.stderr.written = 0
        if find_tampering(restore=True):
            print(f"{TAMPER_MARK} replaced objects restored: {', '.join(_tampered)}", file=sys.stderr)

    get_ipython().events.register("pre_run_cell", before_cell)  # noqa: F821 (this runs inside IPython)


def kernel_guard_line(repo, memory_gb, max_output_chars=MAX_OUTPUT_CHARS):
    """The one line of Python that nbgrader_config.py hands the kernel (IPKernelApp.exec_lines)."""
    return (f"import sys; sys.path.insert(0, {str(repo)!r}); from autograde_tests import integrity as _integrity; "
            f"_integrity.install_kernel_guard({memory_gb!r}, {max_output_chars!r}); del _integrity")


# --- 3. nbgrader preprocessors (plain functions: nbconvert calls them as preprocessor(nb, resources)) ----------

def _nbgrader(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def restore_graded_cells(nb, resources):
    """Sanitize step before nbgrader's OverwriteCells: every cell that names a source grade_id gets the source's
    grade/solution/locked flags and points back (a flipped flag makes nbgrader crash on the checksum or skip the
    grade, nbgrader#1331); cells naming an unknown grade_id lose their nbgrader metadata."""
    from nbgrader.api import Gradebook, MissingEntry

    info = resources["nbgrader"]
    with Gradebook(info["db_url"]) as gb:
        notebook = gb.find_notebook(info["notebook"], info["assignment"])
        source = {c.name: c for c in notebook.source_cells}
        graded = {c.name: c.max_score for c in notebook.grade_cells}
        solution = {c.name for c in notebook.solution_cells}
        task = {c.name for c in notebook.task_cells}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        grade_id = meta.get("grade_id")
        if not meta:  # DeduplicateIds leaves {} on the earlier copies; nbgrader's add_missing_cells trips on it
            cell.metadata.pop("nbgrader", None)
            continue
        if grade_id not in source:
            cell.metadata.pop("nbgrader")
            continue
        meta.update(grade=grade_id in graded, solution=grade_id in solution, task=grade_id in task,
                    locked=source[grade_id].locked)
        if grade_id in graded:
            meta["points"] = graded[grade_id]
        else:
            meta.pop("points", None)
    return nb, resources


def structure_report(nb, source_cells):
    """What a submission changed in its graded and locked cells, as messages for the instructor.

    source_cells: {grade_id: (cell_type, source, locked, is_graded)} of the source notebook.
    """
    seen = {}
    for i, cell in enumerate(nb.cells):
        grade_id = _nbgrader(cell).get("grade_id")
        if grade_id:
            seen.setdefault(grade_id, []).append(i)
    report = []
    for grade_id, (cell_type, source, locked, is_graded) in source_cells.items():
        where = seen.get(grade_id, [])
        if not where and (locked or is_graded):
            report.append(f"cell {grade_id} was deleted or lost its nbgrader metadata: restored from the source")
            continue
        if len(where) > 1:
            report.append(f"cell {grade_id} appears {len(where)} times: only the last copy is graded")
        for i in where:
            cell = nb.cells[i]
            if cell.cell_type != cell_type:
                report.append(f"cell {grade_id} was changed from {cell_type} to {cell.cell_type}: restored")
            elif locked and cell.source.strip() not in (source.strip(), _visible_source(source).strip()):
                report.append(f"locked cell {grade_id} was edited: restored from the source")
    for grade_id in seen:
        if grade_id not in source_cells:
            report.append(f"a cell names an unknown grade_id {grade_id!r}: graded as an ordinary cell")
    return report


def _truncate(text, limit):
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n{TRUNCATED_MARK} {len(text) - limit} more characters dropped]\n"


def limit_output_size(nb, resources, limit=MAX_OUTPUT_CHARS):
    """Autograde step: truncate any text output (stream, result, display, traceback) longer than `limit`."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output.text = _truncate(output.text, limit)
            for mime, value in output.get("data", {}).items():
                if isinstance(value, str) and len(value) > limit:
                    output.data[mime] = _truncate(value, limit) if mime.startswith("text/") else ""
            if "traceback" in output:
                output.traceback = [_truncate(line, limit) for line in output.traceback[:200]]
    return nb, resources


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _visible_source(source):
    """A test cell's source without its hidden block (the markers included)."""
    kept, hidden = [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            hidden = True
        elif line.strip() == HIDDEN_END:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def _failed_line(output):
    """The 1-based line of the test cell where an error was raised (IPython's 'Cell In[n], line k'), or None."""
    for frame in output.get("traceback", []):
        match = re.search(r"(?:Cell In\s*\[[^\]]*\]|<ipython-input-[^>]*>), line (\d+)", ANSI.sub("", frame))
        if match:
            return int(match.group(1))
    return None


def strip_hidden_tests(nb, resources):
    """Feedback step (nbgrader#917): in every cell that holds hidden tests, drop the hidden source; keep a
    failure of the visible tests as 'Error: message' without frames (the frames quote hidden lines and the
    checks' code); replace a failure inside the hidden block, and anything printed, by a short notice."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or HIDDEN_BEGIN not in cell.source:
            continue
        lines = cell.source.splitlines()
        begin = next(i for i, line in enumerate(lines) if line.strip() == HIDDEN_BEGIN) + 1  # 1-based line
        cell.source = _visible_source(cell.source)
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            line = _failed_line(output)
            if output.ename in ("CellTimeoutError", "DeadKernelError"):
                output.traceback = [f"{output.ename}: the cell ran past the time limit or crashed the kernel"]
            elif line is not None and line < begin:
                output.traceback = [f"{output.ename}: {ANSI.sub('', output.evalue)}"]
            else:
                output.ename, output.evalue = "HiddenTestFailed", ("a hidden test failed (it uses other shapes, "
                                                                   "schedules, seeds or dtypes than the visible "
                                                                   "check); re-read the function's contract")
                output.traceback = [f"{output.ename}: {output.evalue}"]
            outputs.append(output)
        cell.outputs = outputs
    return nb, resources
