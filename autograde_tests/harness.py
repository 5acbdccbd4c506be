"""How a check asks for a student's function to be called, in the student's kernel or from the grader.

A check is a generator: it makes fresh inputs, `yield`s a `Call` (the function's parameter name and the named
arguments) and receives what the function returned, then computes the reference and compares. Two drivers run the
same generator, so an honest student and the grader see the same messages:

- `run_local` (JupyterLab, `nbgrader validate`): calls the student's function right here, in the student's kernel.
- `autograde_tests.judge` (autograding): runs the generator in the grader's own process and has each Call made in
  the sandboxed kernel (autograde_tests/kernel_side.py), which hands back plain data only.

Inputs are drawn from seeds offset by `SALT`: 0 in a student's kernel (reproducible messages), a fresh random
number for every graded notebook, so that answers cannot be prepared in advance.
"""
import functools

from autograde_tests.kernel_side import Gen, call_function

SALT = 0


def salted(seed):
    return seed + SALT


class Call:
    """A request to call the function `fn` (a check's parameter name) with the named arguments, in this order."""

    def __init__(self, fn, catch=False, **arguments):
        self.fn, self.catch = fn, catch
        self.names, self.values = list(arguments), list(arguments.values())


class StudentRaised(Exception):
    """The student's function raised: `type_name`, its base classes' names `mro`, and the message."""

    def __init__(self, type_name, mro, message):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.mro, self.message = type_name, mro, message


def respond(call, report):
    """What the check receives for `call` given the plain-data report: the value, or an exception to raise.

    Returns ("send", value) or ("throw", exception). The report's model calls are given back to the call's
    recording models (GaussianEps with record=True), in order.
    """
    name = call.fn
    if report.get("missing"):
        return "throw", AssertionError(f"{name} is not defined: run the cell that defines it (and fix any error "
                                       f"there) before this check")
    recorders = [v for v in call.values if getattr(v, "record", False)]
    for model, calls in zip(recorders, report.get("calls", [])):
        model.calls[:] = [int(t) for t in calls]
    if "raised" in report:
        type_name, mro, message = report["raised"]
        if "NotImplementedError" in mro:
            return "throw", AssertionError(f"{name} is not implemented yet")
        if call.catch:
            return "throw", StudentRaised(type_name, mro, message)
        return "throw", AssertionError(f"{name} raised {type_name}: {message}")
    if report.get("mutated"):
        arg = report["mutated"][0]
        return "throw", AssertionError(
            f"{name} changed its argument `{arg}` in place (an in-place operation such as `{arg} -= ...`, "
            f"`{arg}[...] = ...`, `{arg}.mul_(...)` or `.reverse()`): the caller's data must stay as it was, so "
            f"compute into a new tensor or list (e.g. `{arg} = {arg} - ...`, `list(reversed({arg}))`)")
    return "send", report.get("value")


def drive(gen, make_call):
    """Run a check generator to the end; make_call(call) -> report does each call. Returns what the check returns."""
    action, value = "send", None
    while True:
        try:
            call = gen.send(value) if action == "send" else gen.throw(value)
        except StopIteration as stop:
            return stop.value
        action, value = respond(call, make_call(call))


def run_local(gen, functions):
    """Drive a check with the student's functions called right here (their kernel); functions: {param: fn}."""
    return drive(gen, lambda call: call_function(functions[call.fn], call.names, call.values))


class CheckFailed(AssertionError):
    """A check's verdict in a student's kernel: IPython shows only its message (the teaching line), no grader frames."""

    def _render_traceback_(self):
        return [f"\x1b[0;31mCheckFailed\x1b[0m: {self}"]


def check(*params, depends=()):
    """Turn a check generator `gen(hidden)` into the function a notebook calls: check_x(fn, ..., hidden=False).

    params: the names of the student's functions the check takes, in order. depends: names of the checks of the
    functions these ones call, so that a grader can say "fix that one first". The generator is kept as `.spec`.
    """
    def wrap(gen_fn):
        @functools.wraps(gen_fn)
        def entry(*functions, hidden=False):
            if len(functions) != len(params):
                raise TypeError(f"{gen_fn.__name__} takes the functions {', '.join(params)}")
            try:
                return run_local(gen_fn(hidden), dict(zip(params, functions)))
            except AssertionError as e:
                raise CheckFailed(str(e)) from None

        entry.spec = gen_fn
        entry.params = params
        entry.depends = depends
        return entry
    return wrap


def student_gen(seed):
    """The generator argument a check passes to a student's sampler (made fresh where the call happens)."""
    return Gen(salted(seed))


__all__ = ["Call", "CheckFailed", "StudentRaised", "check", "drive", "run_local", "salted", "student_gen", "SALT"]
