"""GRADER SIDE: the sandbox every graded kernel runs in (bubblewrap), and the read-only view of the course it sees.

`SandboxKernelManager` starts the grading kernel as

    /bin/sh -c 'ulimit ...; exec bwrap <binds> -- python -m ipykernel_launcher -f <connection file>'

so that the student's code runs with:
- a read-only view of only what the notebook needs: the Python installation, `course_lib` as built by `build_view`
  (the implementations of everything the assignments ask for are withheld: calling one raises GradingUnavailable;
  `make_schedule` answers from precomputed tables so that set-up cells still work), its data files, and of
  `autograde_tests` only `kernel_side.py`. No solutions/, no checks, no gradebook, no other submission, no diffusers.
- one writable folder, a private copy of its own (the notebook's folder in autograded/<student>/, shown at the same
  path; what it writes there is thrown away), an empty /tmp and home;
- its own user, PID, network (none), IPC and UTS namespaces: whatever it starts dies with it, it cannot see or
  signal other kernels, and it reaches nothing over the network (the kernel talks to the grader over Unix sockets
  in a private folder, ZeroMQ's ipc transport);
- limits on address space, processes, CPU time and file size (LIMITS).

No --new-session: nbgrader's timeout interrupt (SIGINT to the kernel's process group) must still reach the kernel,
and bwrap itself ignores SIGINT (the shell's `trap '' INT`), or the interrupt would end the sandbox and the kernel.
JPY_PARENT_PID is not passed in: the grader's PID does not exist in the new PID namespace and ipykernel would exit.
"""
import ast
import atexit
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

LIMITS = {"memory_gb": 4.0, "processes": 256, "cpu_seconds": 1800, "file_mb": 256}
# course_lib modules whose functions the assignments ask students to write: withheld in the view, except these
WITHHELD = {"schedules": {"check_timestep"}, "forward": set(), "ddpm": set(), "ddim": {"check_timesteps"},
            "train": set()}
TABLES = [("linear", 1000), ("cosine", 1000), ("linear", 200), ("cosine", 200)]  # make_schedule(name, T) while grading
ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf", "fonts",
       "mime.types", "hosts", "ssl"]
HIDDEN_PACKAGES = ["diffusers"]  # implements DDIM: not importable while grading

_view = None


def course_lib_dir():
    return Path(importlib.util.find_spec("course_lib").origin).resolve().parent


def repo_dir():
    return course_lib_dir().parent


GRADING_MODULE = '''"""Only while grading: what the sandboxed kernel gets instead of the withheld implementations."""
import json
from pathlib import Path


class GradingUnavailable(RuntimeError):
    pass


def unavailable(name):
    raise GradingUnavailable(f"course_lib.{name} is not available while grading: the grader runs your own functions, "
                             f"and course_lib's implementations of what the assignments ask for are withheld")


def table_schedule(name, T, dtype, device):
    import torch
    from course_lib.schedules import NoiseSchedule

    tables = json.loads((Path(__file__).parent / "_grading_tables.json").read_text())
    key = f"{name}/{T}"
    if key not in tables:
        unavailable(f"schedules.make_schedule({name!r}, T={T})")
    fields = {k: torch.tensor(v, dtype=torch.float64) for k, v in tables[key].items()}
    return NoiseSchedule(name=name, **fields).to(device=device, dtype=dtype)
'''


def _withhold(source, module, keep):
    """The module's source with every top-level function not in `keep` replaced by a stub (make_schedule: tables)."""
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name in keep:
            continue
        node.decorator_list = []
        if module == "schedules" and node.name == "make_schedule":
            body = "from course_lib._grading import table_schedule\nreturn table_schedule(name, T, dtype, device)"
        else:
            body = f"from course_lib._grading import unavailable\nunavailable({module + '.' + node.name!r})"
        node.body = ast.parse(body).body
    return ast.unparse(tree) + "\n"


def build_view():
    """A temporary folder with the view of the repo the grading kernel sees (built once per grading process)."""
    global _view
    if _view is not None and _view.exists():
        return _view
    from course_lib import schedules

    _view = Path(tempfile.mkdtemp(prefix="course-view-"))
    atexit.register(shutil.rmtree, _view, True)
    lib = _view / "course_lib"
    lib.mkdir()
    for path in course_lib_dir().glob("*.py"):
        source = path.read_text()
        if path.stem in WITHHELD:
            source = _withhold(source, path.stem, WITHHELD[path.stem])
        (lib / path.name).write_text(source)
    (lib / "_grading.py").write_text(GRADING_MODULE)
    tables = {}
    for name, T in TABLES:
        s = schedules.make_schedule(name, T, dtype=schedules.torch.float64)
        tables[f"{name}/{T}"] = {k: getattr(s, k).tolist() for k in
                                 ["betas", "alphas", "alpha_bar", "alpha_bar_prev", "posterior_variance",
                                  "posterior_mean_coef_x0", "posterior_mean_coef_xt", "snr"]}
    (lib / "_grading_tables.json").write_text(json.dumps(tables))
    (lib / "data").mkdir()  # the real data folder is bound here read-only
    tests = _view / "autograde_tests"
    tests.mkdir()
    (tests / "__init__.py").write_text('"""While grading, only kernel_side is here."""\n')
    shutil.copy(Path(__file__).with_name("kernel_side.py"), tests / "kernel_side.py")
    return _view


def _ro(path):
    """bwrap arguments that show `path` read-only at the same place (a symlink as the same symlink)."""
    p = Path(path)
    if p.is_symlink():
        return ["--symlink", os.readlink(p), str(p)]
    return ["--ro-bind", str(p), str(p)] if p.exists() else []


def bwrap_args(ipc_dir):
    """bwrap's arguments up to (not including) the writable working folder, which the shell adds as $PWD."""
    view, repo = build_view(), repo_dir()
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--uid", "1000", "--gid", "1000",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/tmp/home"]
    tops = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    for top in tops:
        args += _ro(top)
    for name in ETC:
        args += _ro(Path("/etc") / name)
    for prefix in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}):
        if not any(prefix == top or prefix.startswith(top + "/") for top in tops):  # else shown already
            args += _ro(prefix)
    for package in HIDDEN_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            args += ["--tmpfs", list(spec.submodule_search_locations)[0]]
    args += ["--ro-bind", str(view / "course_lib"), str(repo / "course_lib"),
             "--ro-bind", str(course_lib_dir() / "data"), str(repo / "course_lib" / "data"),
             "--ro-bind", str(view / "autograde_tests"), str(repo / "autograde_tests"),
             "--bind", str(ipc_dir), str(ipc_dir)]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp/home", "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/home", "COURSE_ROOT": str(repo), "COURSE_GRADING": "1"}
    for name in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "TZ"]:
        if name in os.environ:
            env[name] = os.environ[name]
    args += ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def wrap_command(cmd, ipc_dir, limits=None):
    """The kernel command `cmd` wrapped in limits and bwrap; the notebook's folder ($PWD) is its writable folder."""
    limits = {**LIMITS, **(limits or {})}
    ulimits = (f"ulimit -v {int(limits['memory_gb'] * 2**20)} && ulimit -t {limits['cpu_seconds']} && "
               f"ulimit -f {limits['file_mb'] * 2048} && ulimit -p {limits['processes']} && ulimit -c 0")
    # bwrap must survive nbgrader's interrupt (SIGINT to the whole process group): it ignores SIGINT, and ipykernel
    # installs its own SIGINT handler while it executes a cell, so the interrupt still stops the student's code
    # the kernel sees its folder at the usual path, but writes into a private copy: nothing it makes there (a link
    # to the gradebook, a huge file) ever reaches autograded/, which nbgrader walks (and chmods) afterwards
    scratch = shlex.quote(os.path.join(ipc_dir, "work"))
    script = (f"trap '' INT && {ulimits} && mkdir {scratch} && cp -a \"$PWD\"/. {scratch}/ && "
              f"exec {shlex.join(bwrap_args(ipc_dir))} "
              f'--bind {scratch} "$PWD" --chdir "$PWD" -- {shlex.join(cmd)}')
    return ["/bin/sh", "-c", script, "course-sandbox"]


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels run in the sandbox, connected over Unix sockets in a private folder."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sandbox_dir = tempfile.mkdtemp(prefix="course-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self.sandbox_dir, "ipc")
        self.connection_file = os.path.join(self.sandbox_dir, "kernel.json")

    def format_kernel_cmd(self, extra_arguments=None):
        return wrap_command(super().format_kernel_cmd(extra_arguments), self.sandbox_dir)

    def remove_sandbox_dir(self):
        shutil.rmtree(self.sandbox_dir, ignore_errors=True)


_status = None


def sandbox_problem():
    """None when a sandboxed Python starts here and is cut off as it should be; else what is wrong (cached)."""
    global _status
    if _status is not None:
        return _status or None
    if shutil.which("bwrap") is None:
        _status = "bubblewrap (bwrap) is not installed"
        return _status
    probe = ("import socket, os, importlib.util\n"
             "assert importlib.util.find_spec('diffusers') is None or not os.listdir(importlib.util.find_spec("
             "'diffusers').submodule_search_locations[0]), 'diffusers visible'\n"
             "from course_lib import ddpm\n"
             "try:\n    ddpm.ddpm_step(None, None, 0, None)\nexcept RuntimeError as e:\n"
             "    assert 'not available while grading' in str(e)\nelse:\n    raise SystemExit('reference reachable')\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\nexcept OSError:\n    pass\n"
             "else:\n    raise SystemExit('network reachable')\nprint('sandbox ok')\n")
    ipc, cwd = tempfile.mkdtemp(prefix="course-kernel-"), tempfile.mkdtemp(prefix="course-check-")
    try:
        cmd = wrap_command([sys.executable, "-c", probe], ipc)
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
        ok = result.returncode == 0 and "sandbox ok" in result.stdout
        _status = "" if ok else f"bwrap could not start a sandboxed Python: {(result.stderr or result.stdout)[-300:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        _status = f"bwrap could not start a sandboxed Python: {e}"
    finally:
        shutil.rmtree(ipc, ignore_errors=True)
        shutil.rmtree(cwd, ignore_errors=True)
    return _status or None
