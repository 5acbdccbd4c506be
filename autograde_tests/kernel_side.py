"""KERNEL SIDE of the trust boundary: the only grading code the student's (sandboxed) kernel can import.

Nothing here decides a grade. While grading, the grader (autograde_tests/judge.py, in its own process) sends the
kernel one small cell per call it wants made, `probe(name, payload)`: the kernel decodes the plain-data arguments,
calls the student's function `name` from the notebook's namespace, and publishes what came back as plain data
(JSON, tensors as raw bytes; nothing is pickled) under the MIME type PROBE_MIME. The grader reads that output,
computes the reference itself, compares, and writes the verdict into the graded notebook. Anything the student's
code does to this module, to torch or to the probe's output can only change the numbers the grader receives, and
wrong numbers fail: the only way to pass is to compute the right ones.

The same codec is used by the grader (to encode arguments and decode results, with checks on every field), and the
exact eps-model `GaussianEps` below is both a check's argument and, in the grader, part of its reference.
"""
import base64
import json
import sys

PROBE_MIME = "application/vnd.course.probe+json"
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_RESULT_BYTES = 64 * 2**20  # a decoded result larger than this is refused by the grader
MAX_OUTPUT_CHARS = 100_000  # per cell in the grading kernel, and per output in the autograded notebook
TRUNCATED_MARK = "[output truncated by the grader:"  # starts every notice of a cut, so grade.py can report it


# --- plain-data codec -------------------------------------------------------------------------------------------

def encode(value):
    """A JSON-able description of tensors, numbers, strings, None and (nested) lists, tuples and dicts."""
    import torch

    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if torch.is_tensor(value):
        t = torch.Tensor.as_subclass(value, torch.Tensor).detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"__tensor__": [str(t.dtype).replace("torch.", ""), list(t.shape), base64.b64encode(raw).decode(),
                               bool(value.requires_grad)]}
    if isinstance(value, (list, tuple)):
        return {"__seq__": type(value).__name__ == "tuple", "items": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if hasattr(value, "encode_for_kernel"):  # GaussianEps, MLPModel, Gen: rebuilt on the other side
        return value.encode_for_kernel()
    return {"__object__": type(value).__name__}


def decode(obj, budget=None):
    """The inverse of `encode`, for data from an untrusted side: every field is checked, nothing is executed.

    Tensors come back as plain torch.Tensor; an object that was no tensor/number/list comes back as Unknown.
    """
    import torch

    budget = [MAX_RESULT_BYTES] if budget is None else budget
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, list):
        raise ValueError("bare list in payload")
    if not isinstance(obj, dict):
        raise ValueError(f"unexpected {type(obj).__name__} in payload")
    if "__tensor__" in obj:
        dtype, shape, data, requires_grad = obj["__tensor__"]
        if dtype not in DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError("bad tensor header")
        raw = base64.b64decode(data, validate=True)
        budget[0] -= len(raw)
        if budget[0] < 0:
            raise ValueError("result too large")
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        t = t.view(getattr(torch, dtype))
        numel = 1
        for n in shape:
            numel *= n
        if t.numel() != numel:
            raise ValueError("tensor size does not match its shape")
        t = t.reshape(shape).clone()
        return t.requires_grad_(True) if requires_grad and t.is_floating_point() else t
    if "__seq__" in obj:
        items = [decode(v, budget) for v in obj["items"]]
        return tuple(items) if obj["__seq__"] is True else items
    if "__dict__" in obj:
        return {decode(k, budget): decode(v, budget) for k, v in obj["__dict__"]}
    if "__object__" in obj:
        return Unknown(str(obj["__object__"])[:80])
    if "__model__" in obj or "__generator__" in obj:
        return _rebuild(obj, budget)
    raise ValueError("unknown payload entry")


class Unknown:
    """What the grader sees of a returned object that is not a tensor, number, string or list: its type's name."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<a {self.type_name} object>"


# --- the arguments checks pass: an exact eps-model, a seeded MLP, a seeded generator ---------------------------

class GaussianEps:
    """The exact eps-model for data x0 ~ N(mu, s^2 I): eps*(x_t, t) = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mu) / var_t.

    var_t = abar_t s^2 + 1 - abar_t. It checks how it is called (t a LongTensor (B,) inside [0, T)) and, with
    record=True, keeps each call's t in `calls` so a check can say which timesteps a sampler visited.
    """

    def __init__(self, alpha_bar, mu=0.0, s=0.5, record=False):
        self.alpha_bar, self.mu, self.s, self.record, self.calls = alpha_bar, float(mu), float(s), record, []

    def encode_for_kernel(self):
        return {"__model__": "gaussian_eps", "alpha_bar": encode(self.alpha_bar), "mu": self.mu, "s": self.s,
                "record": self.record}

    def __call__(self, x_t, t):
        import torch

        T = self.alpha_bar.shape[0]
        if not torch.is_tensor(t) or t.dtype != torch.long or t.shape != (x_t.shape[0],):
            raise AssertionError(f"call the model as model(x_t, t) with t a LongTensor of shape (B,) = "
                                 f"({x_t.shape[0]},), e.g. torch.full((B,), t, dtype=torch.long); got "
                                 f"{t.dtype if torch.is_tensor(t) else type(t).__name__} "
                                 f"{tuple(t.shape) if torch.is_tensor(t) else ''}")
        if self.record:
            self.calls.append(int(t[0]))
        if int(t.min()) < 0 or int(t.max()) >= T:
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise AssertionError(f"the model was called at t={bad}, outside [0, {T}): the model only knows the "
                                 f"0-based training steps; t_prev = -1 stands for abar = 1 and is never a model time")
        abar = self.alpha_bar.double()[t].reshape(-1, *[1] * (x_t.dim() - 1))  # (B, 1, ..., 1)
        var_t = abar * self.s**2 + 1 - abar
        return ((1 - abar).sqrt() * (x_t.double() - abar.sqrt() * self.mu) / var_t).to(x_t.dtype)


class MLPModel:
    """course_lib's MLPDenoiser with given weights (a dict of tensors), rebuilt identically on both sides."""

    def __init__(self, config, state):
        self.config, self.state = dict(config), state

    def encode_for_kernel(self):
        return {"__model__": "mlp", "config": self.config, "state": encode(self.state)}

    def build(self):
        import torch
        from course_lib.mlp import MLPDenoiser

        model = MLPDenoiser(**self.config)
        model.load_state_dict({k: v.detach().clone() for k, v in self.state.items()})
        return model.to(next(iter(self.state.values())).dtype if self.state else torch.float32)


class Gen:
    """A torch.Generator seeded with `seed`, made fresh where the call happens; None stands for no generator."""

    def __init__(self, seed):
        self.seed = seed

    def encode_for_kernel(self):
        return {"__generator__": self.seed}

    def build(self):
        import torch

        return torch.Generator().manual_seed(self.seed)


def _rebuild(obj, budget):
    if "__generator__" in obj:
        seed = obj["__generator__"]
        if not isinstance(seed, int):
            raise ValueError("bad generator seed")
        return Gen(seed)
    kind = obj["__model__"]
    if kind == "gaussian_eps":
        return GaussianEps(decode(obj["alpha_bar"], budget), float(obj["mu"]), float(obj["s"]), bool(obj["record"]))
    if kind == "mlp":
        return MLPModel(obj["config"], decode(obj["state"], budget))
    raise ValueError(f"unknown model {kind!r}")


def materialize(value):
    """Arguments as the student's function receives them: Gen -> torch.Generator, MLPModel -> nn.Module."""
    if isinstance(value, (Gen, MLPModel)):
        return value.build()
    return value


def snapshot(value):
    """A copy of a tensor or list argument, to notice a function that changes its arguments in place."""
    import torch

    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return None


def changed(before, after):
    import torch

    if before is None:
        return False
    if torch.is_tensor(before):
        return not (torch.is_tensor(after) and after.shape == before.shape and after.dtype == before.dtype
                    and torch.equal(after.detach(), before))
    if not isinstance(after, list) or len(after) != len(before):
        return True
    return any(changed(b, a) for b, a in zip(before, after))


def call_function(fn, names, values):
    """Call fn(*values); return a plain-data report: the value or the exception, the arguments it changed, model calls.

    names: the argument names (for messages). Used by the probe in the grading kernel and by the checks in a
    student's own kernel, so both report exactly the same things.
    """
    args = [materialize(v) for v in values]
    before = [snapshot(a) for a in args]
    report = {}
    try:
        out = fn(*args)
    except BaseException as e:  # noqa: B036 (a student's SystemExit or KeyboardInterrupt is an answer too)
        if isinstance(e, KeyboardInterrupt):
            raise
        report["raised"] = [type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e)[:2000]]
    else:
        report["value"] = out
    report["mutated"] = [name for name, b, a in zip(names, before, args) if changed(b, a)]
    report["calls"] = [list(v.calls) for v in args if isinstance(v, GaussianEps) and v.record]
    return report


# --- in the grading kernel -------------------------------------------------------------------------------------

def probe(name, payload):
    """Call the notebook's function `name` on the decoded arguments; publish the report as PROBE_MIME data."""
    from IPython import get_ipython
    from IPython.display import publish_display_data

    request = json.loads(payload)
    values = [decode(v) for v in request["values"]]
    fn = get_ipython().user_ns.get(name)
    if fn is None or not callable(fn):
        report = {"missing": True}
    else:
        report = call_function(fn, request["names"], values)
        report["value"] = encode(report["value"]) if "value" in report else None
    publish_display_data({PROBE_MIME: json.dumps(report)})


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


def install(memory_gb=None, max_output_chars=MAX_OUTPUT_CHARS):
    """Run in the grading kernel before the notebook: cap what a cell prints (and, outside the sandbox, memory)."""
    if memory_gb:  # the sandbox sets its own limits before the kernel starts; this is for --no-sandbox
        import resource

        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.stdout = _CappedStream(sys.stdout, max_output_chars)
    sys.stderr = _CappedStream(sys.stderr, max_output_chars)

    def before_cell(*args):
        sys.stdout.written = sys.stderr.written = 0

    get_ipython().events.register("pre_run_cell", before_cell)  # noqa: F821 (this runs inside IPython)


def install_line(repo, memory_gb=None):
    """The one line of Python that nbgrader_config.py hands the grading kernel (IPKernelApp.exec_lines)."""
    return (f"import sys; sys.path.insert(0, {str(repo)!r}); from autograde_tests import kernel_side as _ks; "
            f"_ks.install({memory_gb!r}); del _ks")
