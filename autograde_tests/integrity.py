"""GRADER SIDE: what the grader checks about a submission besides its numbers (docs/instructor.md, threat model).

The verdicts themselves are computed outside the student's kernel (judge.py), which runs in a sandbox
(sandbox.py); this module holds the rest, all run in the grader's process:

1. `scan_notebook`: a static scan of the cells a student can edit. Code that reaches into the grader
   (assigns to an attribute of torch, course_lib or the checks; touches sys.modules, builtins,
   get_ipython, frames, exec/eval, ctypes, ...) is flagged; scripts/grade.py then scores every graded
   cell after the first flagged cell 0 and marks it for manual review (a second line of defence and a
   report: the sandbox and the outside verdict hold without it).
2. `copied_reference`: solution cells whose code is near-identical to course_lib's implementation.
3. Plain-function nbgrader preprocessors: `restore_graded_cells` (sanitize: graded cells keep the
   source's flags and points, unknown grade_ids lose theirs), `limit_output_size` (autograde: long
   outputs are truncated), `strip_hidden_tests` (feedback: hidden test source never reaches students,
   nbgrader#917) and `sanitize_feedback` (feedback: no student-controlled script, event handler or
   javascript: URL in the HTML); `name_test_cells` (feedback, last: each test cell gets a heading that names it, its
   checks, points and result, and the page's style wraps long output lines instead of cutting them off).
4. `finish_feedback_page`: a feedback page with MathJax inlined from the installed jupyter-server-mathjax package
   instead of nbgrader's CDN script, so that math renders offline, long lines wrapped and the table of contents'
   "Test cell" entries named (scripts/grade.py feedback applies it to every page).
"""
import ast
import difflib
import re

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
from autograde_tests.kernel_side import MAX_OUTPUT_CHARS, TRUNCATED_MARK  # noqa: E402 (one definition, both sides)

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


def strip_hidden_tests(nb, resources):
    """Feedback step (nbgrader#917): in every cell that holds hidden tests, drop the hidden source. The outputs of
    graded test cells are the judge's verdicts (judge.py), which never quote hidden inputs; anything else there
    (a kernel's error from before the judge, printed text) is replaced by a short notice."""
    from autograde_tests.judge import HIDDEN_ENAME, TIMEOUT_ENAME

    for cell in nb.cells:
        if cell.get("cell_type") != "code" or HIDDEN_BEGIN not in cell.source:
            continue
        cell.source = _visible_source(cell.source)
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") not in ("AssertionError", HIDDEN_ENAME,
                                                                                     TIMEOUT_ENAME):
                output.ename, output.evalue = "Error", "this check could not run (the kernel failed before it)"
                output.traceback = [f"{output.ename}: {output.evalue}"]
            if output.get("output_type") == "error":
                outputs.append(output)
        cell.outputs = outputs
    return nb, resources


SAFE_MIME = ("text/plain", "image/png", "image/jpeg")
_COLON = r"(:|&(amp;)*colon;?|&(amp;)*#0*58;?|&(amp;)*#x0*3a;?)"
_SCHEME = re.compile(rf"(?i)(java|vb)\s*script\s*{_COLON}|data\s*{_COLON}\s*text/html")


def _defang(text):
    """Markdown source with raw HTML shown as text (no tags, no event handlers) and script URLs disabled. Escaping
    `&` and `<` is enough to stop every tag and entity; `>` is kept, so that markdown's `> quote` still works."""
    text = _SCHEME.sub("blocked:", text)  # before escaping; _COLON also matches colons escaped once or more
    return text.replace("&", "&amp;").replace("<", "&lt;")


def sanitize_feedback(nb, resources):
    """Feedback step: nothing a student wrote may run in the page a TA or the student opens. Markdown cells have their
    raw HTML escaped and script URLs disabled; outputs keep only plain text and PNG/JPEG images (no HTML, SVG,
    JavaScript or widget state); cell attachments are dropped."""
    for cell in nb.cells:
        cell.pop("attachments", None)
        if cell.get("cell_type") in ("markdown", "raw"):
            cell.source = _defang(cell.source)
            cell.cell_type = "markdown"
        for output in cell.get("outputs", []):
            if "data" in output:
                output.data = {k: v for k, v in output.data.items() if k in SAFE_MIME}
    nb.metadata.pop("widgets", None)
    return nb, resources


# Output is shown in <pre> elements that do not wrap: a long verdict was cut off at the page's edge.
WRAP_CSS = ("/* verdicts in full: wrap long output lines instead of cutting them off */\n"
            "div.output_area pre, div.output_subarea pre { white-space: pre-wrap; overflow-wrap: anywhere; }")


def _is_test_cell(cell):
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution")


def _points(value):
    return f"{float(value):g}"


def name_test_cells(nb, resources):
    """Feedback step, the last one (after CSSHTMLHeaderPreprocessor, which sets the page's CSS): before every graded
    test cell a heading that names it (grade_id), the checks it runs and the function they test (from its visible
    source, restored from the gradebook), its points and its result (nbgrader's own table of contents calls each
    one "Test cell"); and a style rule that wraps long output lines, so that every message is shown in full."""
    from autograde_tests.judge import TIMEOUT_ENAME, check_calls

    cells = []
    for cell in nb.cells:
        if _is_test_cell(cell):
            meta = _nbgrader(cell)
            calls = check_calls(cell.source)
            checks = ", ".join(f"`{name}` (tests `{args[0]}`)" if args else f"`{name}`" for name, args, _ in calls)
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            score = meta.get("score")
            result = (f"score {_points(score)} / {_points(meta.get('points', 0))}" if score is not None else
                      f"{_points(meta.get('points', 0))} points")
            outcome = ("stopped at the time limit" if errors and errors[0].get("ename") == TIMEOUT_ENAME else
                       "failed" if errors else "passed")
            result += f", **{outcome}**" + (" (the message is below the cell)" if errors else "")
            heading = f"**Test cell `{meta.get('grade_id')}`**" + (f": {checks}" if checks else "") + f"; {result}"
            cells.append(_markdown_cell(heading.replace("<", "&lt;")))
        cells.append(cell)
    nb.cells = cells
    css = resources.setdefault("inlining", {}).setdefault("css", [])
    if WRAP_CSS not in css:
        css.append(WRAP_CSS)
    return nb, resources


def _markdown_cell(text):
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


# --- 4. math that renders offline ------------------------------------------------------------------------------

# MathJax 2.7 from the jupyter-server-mathjax package (a dependency of the course): the loader, the combined TeX
# configuration (its input, MathML output and AMS extensions are all in that one file) and the Safe extension
# (no \href, \style or \class from a student's markdown). Output is the browser's own MathML (NativeMML), which
# needs no web fonts, so nothing is ever fetched: the page renders math without a network.
MATHJAX_FILES = ("MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js", "extensions/Safe.js")
MATHJAX_CONFIG = """window.MathJax = {root: "", menuSettings: {renderer: "NativeMML", zoom: "None"}, showMathMenu: false,
  messageStyle: "none", "fast-preview": {disabled: true},
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true}};"""
CDN_MATHJAX = re.compile(r"<script[^>]*\ssrc=[\"']?https?://[^\"'>]*mathjax[^>]*>\s*</script>", re.I)
REMOTE_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"']?(https?:)?//", re.I)
OFFLINE_MARK = "inlined from the installed jupyter-server-mathjax package"
_mathjax_html = None


def mathjax_inline():
    """<script> elements holding MathJax and its configuration, read from the installed package (cached)."""
    global _mathjax_html
    if _mathjax_html is None:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("jupyter_server_mathjax")  # located, not imported (that starts jupyter_server)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("jupyter-server-mathjax is not installed (pip install -e . installs it)")
        static = Path(list(spec.submodule_search_locations)[0]) / "static"
        parts = [MATHJAX_CONFIG] + [(static / name).read_text(encoding="utf-8") for name in MATHJAX_FILES]
        # inside <script>, "</script" would end the element and "<!--" can start HTML's escaped state: in MathJax
        # they occur in string and regex literals only, where "<\/" and "<\!" mean the same to JavaScript
        parts = [re.sub(r"(?i)</(script)", r"<\\/\1", part).replace("<!--", "<\\!--") for part in parts]
        _mathjax_html = (f"<!-- MathJax and its TeX configuration, {OFFLINE_MARK}: math renders offline -->\n"
                         + "".join(f"<script type=\"text/javascript\">{part}</script>\n" for part in parts))
    return _mathjax_html


TOC_ENTRY = re.compile(r'<a href="#([\w.-]+)">Test cell</a>')


def finish_feedback_page(text):
    """A feedback page (nbgrader's HTML) as students get it: nbgrader's CDN MathJax script replaced by MathJax inlined
    from the installed package, and the table of contents naming each test cell (nbgrader writes "Test cell" for all
    of them). Idempotent. Raises if any script would still be fetched from a URL."""
    if OFFLINE_MARK not in text:
        text = CDN_MATHJAX.sub(lambda _: mathjax_inline(), text, count=1)
    text = TOC_ENTRY.sub(r'<a href="#\1">Test cell <code>\1</code></a>', text)
    remote = [m.group(0) for m in REMOTE_SCRIPT.finditer(text)]
    if remote:
        raise RuntimeError(f"the page would fetch a script from the network: {remote[0][:200]}")
    return text


# --- 2. copying the reference ----------------------------------------------------------------------------------

COPY_MIN_NODES = 40  # shorter functions (one-line formulas) are written the same way by everyone
COPY_RATIO = 0.9


def _shape(fn):
    """A function's code as a sequence of node kinds and attribute names: variable names, docstrings, comments and
    formatting do not count."""
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
        getattr(fn.body[0], "value", None), ast.Constant) and isinstance(fn.body[0].value.value, str) else fn.body
    tokens = []
    for stmt in body:
        for node in ast.walk(stmt):
            tokens.append(type(node).__name__ + (f".{node.attr}" if isinstance(node, ast.Attribute) else "")
                          + (f"={node.value!r}" if isinstance(node, ast.Constant) and not isinstance(node.value, str)
                             else ""))
    return tokens


_reference_shapes = None


def _alike(a, b):
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _solution_shapes(lib):
    """Shapes of the functions in the course's own solution notebooks (solutions/*/*.ipynb beside course_lib)."""
    import json

    shapes = []
    for path in (lib.parent / "solutions").glob("*/*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            tree = _parse("".join(cell["source"])) if cell["cell_type"] == "code" else None
            shapes += [_shape(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)] if tree else []
    return shapes


def reference_shapes():
    """{'module.function': shape} of course_lib's implementations of what the assignments ask for, leaving out those
    that the course's own solution writes the same way (there the docstring dictates the code: no evidence)."""
    global _reference_shapes
    if _reference_shapes is None:
        from autograde_tests.sandbox import WITHHELD, course_lib_dir

        lib = course_lib_dir()
        solutions = _solution_shapes(lib)
        _reference_shapes = {}
        for module in WITHHELD:  # the modules that implement what the assignments ask for
            for node in ast.parse((lib / f"{module}.py").read_text()).body:
                shape = _shape(node) if isinstance(node, ast.FunctionDef) else []
                if len(shape) >= COPY_MIN_NODES and not any(_alike(shape, s) >= COPY_RATIO for s in solutions):
                    _reference_shapes[f"{module}.{node.name}"] = shape
    return _reference_shapes


def copied_reference(nb):
    """Messages for the solution cells' functions whose code is near-identical to a course_lib implementation."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or not _nbgrader(cell).get("solution"):
            continue
        tree = _parse(cell.get("source", ""))
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)) if tree else []:
            shape = _shape(fn)
            if len(shape) < COPY_MIN_NODES:
                continue
            for name, ref in reference_shapes().items():
                ratio = _alike(shape, ref)
                if ratio >= COPY_RATIO:
                    found.append(f"cell {_nbgrader(cell).get('grade_id') or i}: {fn.name} is near-identical to "
                                 f"course_lib.{name} ({ratio:.0%} of its code's structure)")
                    break
    return found
