"""GRADER SIDE: nbgrader's Execute step, with every graded test cell judged in the grader's own process.

The notebook runs in the sandboxed kernel (autograde_tests/sandbox.py) cell by cell as usual, except the graded
test cells. For those, `JudgedExecute` reads the check calls from the cell's source (restored from the gradebook by
nbgrader, so a student cannot change them), e.g. `check_q_sample(q_sample, hidden=True)`, and runs that check's
generator here. Each `Call` it yields becomes one small cell in the kernel (`kernel_side.probe`), whose output is
plain data that is decoded and checked field by field here. The reference values, the comparisons, the points and
the messages never enter the kernel. The verdict is written as the cell's output: nothing on success (or what the
check printed), one error output on failure, which nbgrader's SaveAutoGrades scores 0 as usual. Inputs are drawn
with a fresh random salt for every notebook (harness.SALT), recorded in the notebook's metadata.

A failure of a visible check shows its message; a failure of a hidden check shows the property it tests and the
message's hint (what to look at), not the hidden inputs. When a check fails and a check of a function it calls
failed before it, the message says so. A function that still raises NotImplementedError is reported as not
implemented yet, hidden check or not (the summary leaves it out of the failures). A call that runs past the per-cell
time limit (c.Execute.timeout) gives a `TimeLimitExceeded` verdict naming the check, the function and the limit,
hidden or not (it reveals no input); an ordinary cell that runs past it gets the same kind of message in place of
nbclient's bare CellTimeoutError. Every judged test cell also records its verdict in its metadata (`course_verdict`:
checks, function, result, message), which scripts/grade.py's summary reads.
"""
import ast
import contextlib
import importlib
import io
import json
import re
import secrets

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError
from nbgrader.preprocessors import Execute
from traitlets import Bool

from autograde_tests import harness
from autograde_tests.kernel_side import PROBE_MIME, decode, encode
from autograde_tests.sandbox import SandboxKernelManager, sandbox_problem

CHECK_MODULES = ("autograde_tests.checks", "autograde_tests.checks_ddim")
MAX_REPORT_CHARS = 100 * 2**20
HIDDEN_ENAME = "HiddenTestFailed"
TIMEOUT_ENAME = "TimeLimitExceeded"  # a verdict (or an ordinary cell) stopped at the per-cell time limit
TIMEOUT_ENAMES = ("CellTimeoutError", "TimeoutError", TIMEOUT_ENAME)
NOT_IMPLEMENTED = " is not implemented yet"  # harness.respond's message for a function that raises NotImplementedError
VERDICT_KEY = "course_verdict"  # cell metadata: what the judge decided for a graded test cell


def find_check(name):
    for module in CHECK_MODULES:
        entry = getattr(importlib.import_module(module), name, None)
        if entry is not None and hasattr(entry, "spec"):
            return entry
    return None


def check_calls(source):
    """[(check name, [argument names], hidden)] of the `check_x(f, ..., hidden=...)` lines of a test cell, or []."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    calls = []
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id.startswith("check_")):
            continue
        if not all(isinstance(a, ast.Name) for a in call.args):
            continue
        hidden = any(k.arg == "hidden" and isinstance(k.value, ast.Constant) and k.value.value is True
                     for k in call.keywords)
        calls.append((call.func.id, [a.id for a in call.args], hidden))
    return calls


def _is_test_cell(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution")


class ProbeFailed(Exception):
    """The kernel gave no usable answer for a call (timeout, unreadable output): the student's side."""


class ProbeTimedOut(ProbeFailed):
    """The call ran past the per-cell time limit and was interrupted."""


def read_report(outputs, timeout):
    """The probe's report from a probe cell's outputs: a plain dict with checked fields, or ProbeFailed."""
    for out in outputs:
        if out.get("output_type") == "error" and out.get("ename") in TIMEOUT_ENAMES:
            raise ProbeTimedOut(f"did not return within the time limit ({timeout} s per call): an endless loop, or "
                                f"far more work than the function needs?")
    data = [out["data"][PROBE_MIME] for out in outputs if PROBE_MIME in out.get("data", {})]
    errors = [f"{out.get('ename')}: {out.get('evalue')}" for out in outputs if out.get("output_type") == "error"]
    if not data:
        raise ProbeFailed("could not be called: " + (errors[-1][:300] if errors else "the kernel gave no answer"))
    text = data[-1] if isinstance(data[-1], str) else json.dumps(data[-1])
    if len(text) > MAX_REPORT_CHARS:
        raise ProbeFailed("returned far too much data")
    try:
        raw = json.loads(text)
        report = {}
        if raw.get("missing") is True:
            return {"missing": True}
        if "raised" in raw:
            type_name, mro, message = raw["raised"]
            report["raised"] = [str(type_name)[:100], [str(m)[:100] for m in mro][:50], str(message)[:2000]]
        else:
            report["value"] = decode(raw["value"])
        report["mutated"] = [str(m)[:100] for m in raw.get("mutated", [])][:20]
        report["calls"] = [[int(t) for t in c] for c in raw.get("calls", [])][:10]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ProbeFailed(f"returned something the grader cannot read ({type(e).__name__})") from None
    return report


def hidden_message(entry, fn, message):
    """What a student sees when a hidden check fails: the property it tests and the hint, not the hidden inputs."""
    prop = (entry.__doc__ or "").strip().splitlines()[0] if entry.__doc__ else entry.__name__
    hint = message.split("; ", 1)[1] if "; " in message else ""
    return f"a hidden test of {fn} failed. It tests: {prop}" + (f" Hint: {hint}" if hint else "")


def error_output(ename, message):
    return nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


def timeout_message(check, fn, timeout):
    """A test cell's verdict when a call of the student's function ran past the per-cell time limit."""
    return (f"{check}: stopped after {timeout} s (the per-cell time limit) while running {fn}: an endless loop, or "
            f"far more work than {fn} needs?")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def interrupted_in(outputs):
    """The innermost function of the student's code that the interrupt stopped (from the KeyboardInterrupt
    traceback the kernel sends after a time-out), or None."""
    for out in outputs:
        if out.get("output_type") == "error" and out.get("ename") == "KeyboardInterrupt":
            text = ANSI.sub("", "\n".join(out.get("traceback", [])))
            frames = re.findall(r"^Cell In ?\[\d*\], line \d+, in (\w+)\(", text, flags=re.M)  # the notebook's code
            return frames[-1] if frames else None
    return None


class JudgedExecute(Execute):
    """nbgrader's Execute in the sandbox, with graded test cells judged outside the kernel (see the module doc)."""

    sandbox = Bool(True, help="run the kernel in the bubblewrap sandbox (off only with grade.py --no-sandbox)"
                   ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kernel_manager_class = SandboxKernelManager if self.sandbox else AsyncKernelManager

    def preprocess(self, nb, resources=None, km=None):
        if self.sandbox:
            problem = sandbox_problem()
            if problem:
                raise RuntimeError(f"no working grading sandbox ({problem}); install bubblewrap (docs/instructor.md) "
                                   f"or grade with `scripts/grade.py autograde --no-sandbox`, which reports it")
        harness.SALT = secrets.randbelow(2**31)
        nb.metadata["course_grading"] = {"salt": harness.SALT, "sandbox": bool(self.sandbox)}
        self._failed = {}
        try:
            return super().preprocess(nb, resources, km)
        finally:
            manager = getattr(self, "km", None)
            if hasattr(manager, "remove_sandbox_dir"):
                manager.remove_sandbox_dir()

    def preprocess_cell(self, cell, resources, index):
        calls = check_calls(cell.source) if _is_test_cell(cell) else []
        if not calls:
            cell, resources = super().preprocess_cell(cell, resources, index)
            self.explain_timeout(cell)
            return cell, resources
        cell.outputs, verdict = self.judge(calls, index)
        cell.metadata[VERDICT_KEY] = verdict
        cell.execution_count = None
        self.nb.cells[index] = cell
        return cell, self.resources

    def explain_timeout(self, cell):
        """An ordinary cell stopped at the time limit: nbclient's bare CellTimeoutError becomes a message that says
        which cell, after how long and (when the traceback shows it) in which function."""
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and out.get("ename") in TIMEOUT_ENAMES:
                name = cell.metadata.get("nbgrader", {}).get("grade_id") or "this cell"
                fn = interrupted_in(cell.outputs)
                out.ename = TIMEOUT_ENAME
                out.evalue = (f"{name}: stopped after {self.timeout} s (the per-cell time limit)"
                              + (f" while running {fn}" if fn else "") + ": an endless loop, or far more work than "
                              "needed? The cells after it ran as usual.")
                out.traceback = [f"{out.ename}: {out.evalue}"]

    def probe(self, fn, call, index):
        """Have the kernel call the notebook's function `fn`; return the checked report."""
        payload = json.dumps({"names": call.names, "values": [encode(v) for v in call.values]})
        cell = nbformat.v4.new_code_cell(f"import autograde_tests.kernel_side as _ks\n_ks.probe({fn!r}, {payload!r})")
        try:
            self.execute_cell(cell, index, store_history=False)
        except CellTimeoutError:  # the kernel did not even answer the interrupt in time
            raise ProbeTimedOut("did not return within the time limit") from None
        return read_report(cell.outputs, self.timeout)

    def judge(self, calls, index):
        """Run each check of a test cell here, calls in the kernel. Returns the outputs the cell gets (the verdict)
        and the verdict as plain data for the cell's metadata (VERDICT_KEY)."""
        outputs = []
        verdict = {"checks": [name for name, _, _ in calls], "function": calls[0][1][0] if calls[0][1] else None,
                   "result": "passed", "message": ""}
        for name, args, hidden in calls:
            entry = find_check(name)
            if entry is None or len(args) != len(entry.params):
                message = f"the grader has no check {name} taking {args}"
                verdict.update(result="failed", message=message)
                return outputs + [error_output("AssertionError", message)], verdict
            functions = dict(zip(entry.params, args))
            running = [args[0]]  # the notebook function of the call in progress
            printed = io.StringIO()

            def make_call(call):
                running[0] = functions[call.fn]
                return self.probe(functions[call.fn], call, index)

            try:
                with contextlib.redirect_stdout(printed):
                    harness.drive(entry.spec(hidden), make_call)
            except ProbeTimedOut:
                message = timeout_message(name, running[0], self.timeout)
                self._failed.setdefault(name, args[0])
                verdict.update(function=running[0], result="timed out", message=message)
                return outputs + [error_output(TIMEOUT_ENAME, message)], verdict
            except (AssertionError, ProbeFailed) as e:
                message = str(e) if isinstance(e, AssertionError) else f"{args[0]} {e}"
                not_implemented = any(message.startswith(p + NOT_IMPLEMENTED) for p in (*entry.params, *args))
                earlier = [self._failed[d] for d in entry.depends if d in self._failed]
                if earlier:
                    message += f" (note: {earlier[0]} failed its own check above; fix that first)"
                self._failed.setdefault(name, args[0])
                shown = hidden_message(entry, args[0], message) if hidden and not not_implemented else message
                verdict.update(function=args[0], result="not implemented" if not_implemented else "failed",
                               message=shown)
                outputs.append(error_output(HIDDEN_ENAME if hidden and not not_implemented else "AssertionError",
                                            shown))
                return outputs, verdict
            if printed.getvalue():
                outputs.append(nbformat.v4.new_output("stream", name="stdout", text=printed.getvalue()))
        return outputs, verdict
