"""`python3 course.py lab` says where JupyterLab listens, and JupyterLab stops when course.py stops.

Each test runs the real script, `course.py lab --no-browser --port P`, from a temporary copy of the repo's top
level: course.py, pyproject.toml, and a .venv whose `python` runs this interpreter and whose set-up stamp is
current, so course.py's set-up is skipped and the repo (and its .venv) is never touched. HOME, Jupyter's runtime
folder and JupyterLab's settings are temporary too. Each test starts a kernel, stops course.py one way (SIGTERM,
SIGHUP, SIGINT, SIGKILL, or its parent dying) and checks that within STOP_LIMIT_S course.py has exited, the server
and its kernel are gone, the port refuses connections and the server removed its runtime file (a clean stop).
POSIX only: the stops are signals (course.py degrades to Ctrl-C and its stdin lifeline on Windows).
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START_LIMIT_S = 120  # JupyterLab starts in a few seconds; the rest is slack for a loaded CI machine
REPORT_LIMIT_S = 10  # course.py looks for the server's address every 0.5 s
STOP_LIMIT_S = 12  # a clean stop takes 1 to 3 s; course.py escalates to SIGTERM only after 15 s (STOP_GRACE_S)
URL_LINE = re.compile(r"\[course\] JupyterLab is running at (\S+) \(port (\d+);")

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stops tested are POSIX signals")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_course_root(root):
    """Make `root` a place `python3 course.py lab` runs from without setting anything up (see the docstring)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("course.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    stamp = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    (root / ".venv" / "course-setup.stamp").write_text(stamp + "\n")
    return root


def lab_env(tmp_path):
    """The environment for course.py: temporary HOME, runtime and settings folders; this venv's tools on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
    env.update(HOME=str(tmp_path / "home"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               NBGRADER_EXCHANGE=str(tmp_path / "exchange"),  # read by nbgrader_config.py
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("MPLBACKEND", None)  # kernels use the inline backend, as for a student
    for folder in ("home", "exchange"):
        (tmp_path / folder).mkdir(exist_ok=True)
    # No news or update checks in the browser: they would reach the network and pop up over the page.
    notification = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


def is_gone(pid):
    """True once `pid` has exited (a zombie waiting for a parent that does not reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    if not Path("/proc/self").exists():
        return False  # no /proc (macOS): a zombie cannot be told from a running process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # exited since os.kill
    return state in ("Z", "X")


def port_refuses(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def as_from_a_terminal():
    """Give the child the default SIGINT and SIGHUP, as a terminal's shell does. A test run started in the
    background (`cmd &`, nohup) ignores both, the child would inherit that, and Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class CourseLab:
    """`python3 course.py lab ARGS` from course root `root`, its output collected line by line.

    With via_parent=True it is started by an intermediate Python process (`self.parent`) that only waits for it,
    so that a test can make course.py's parent die."""

    def __init__(self, root, tmp_path, args, via_parent=False):
        self.root, self.tmp_path, self.lines = Path(root), Path(tmp_path), []
        cmd = [sys.executable, str(self.root / "course.py"), "lab", *args]
        if via_parent:
            cmd = [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
                   "print('[parent] course.py is', p.pid, flush=True); sys.exit(p.wait())", *cmd]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=lab_env(self.tmp_path), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     preexec_fn=as_from_a_terminal)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.parent = self.proc if via_parent else None
        self.course_pid = int(self.wait_for(r"\[parent\] course.py is (\d+)").group(1)) if via_parent else self.proc.pid
        self.server_pid = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout_s=START_LIMIT_S):
        """The first match of `pattern` in the output; fails with the output if none comes within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        pytest.fail(f"no line matching {pattern!r} in course.py's output within {timeout_s} s:\n{self.output}")

    def wait_until_running(self):
        """Wait for course.py's line with the URL; return (url, port, token) and find the server's pid."""
        self.wait_for(r"\[course\] JupyterLab is running at|Jupyter Server .* is running at")
        match = self.wait_for(URL_LINE.pattern, timeout_s=REPORT_LIMIT_S)  # once the server runs, promptly
        url, port = match.group(1), int(match.group(2))
        token = re.search(r"token=([0-9a-f]+)", url)
        infos = [json.loads(p.read_text()) for p in (self.tmp_path / "runtime").glob("jpserver-*.json")]
        pids = [info["pid"] for info in infos if info["port"] == port]
        assert len(pids) == 1, f"expected one server on port {port} in the runtime folder, found {infos}"
        self.server_pid = pids[0]
        return url, port, token.group(1) if token else None

    def start_kernel(self, port, token):
        """Start a kernel through the REST API; return its pid (found through its connection file in /proc), or
        None without /proc (macOS)."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels?token={token}", data=b"{}",
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            kernel_id = json.loads(response.read())["id"]
        if not Path("/proc/self").exists():
            return None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for proc_dir in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc_dir / "cmdline").read_bytes()
                except OSError:
                    continue
                if f"kernel-{kernel_id}.json".encode() in cmdline and b"ipykernel" in cmdline:
                    return int(proc_dir.name)
            time.sleep(0.2)
        pytest.fail(f"no process for kernel {kernel_id} within 60 s")

    def close(self):
        """Kill whatever is still running (a failed test), by pid; wait for the processes this test started."""
        servers = {json.loads(p.read_text()).get("pid") for p in (self.tmp_path / "runtime").glob("jpserver-*.json")}
        for pid in (self.course_pid, self.server_pid, *servers):
            if pid is not None and not is_gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)


def wait_gone(pids, timeout_s):
    """Wait until every pid has exited; return those still running after timeout_s."""
    pids = [pid for pid in pids if pid is not None]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(is_gone(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if not is_gone(pid)]


@pytest.fixture
def course_root(tmp_path):
    return make_course_root(tmp_path / "course")


def course_lines(lab):
    return [line for line in lab.lines if line.startswith("[course]")]


@pytest.mark.timeout(START_LIMIT_S + 120)
@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL", "parent dies"])
def test_jupyterlab_stops_with_course_py(course_root, tmp_path, how):
    port = free_port()
    lab = CourseLab(course_root, tmp_path, ["--no-browser", f"--port={port}"], via_parent=(how == "parent dies"))
    try:
        url, reported_port, token = lab.wait_until_running()
        assert reported_port == port and url.startswith(f"http://127.0.0.1:{port}/lab?token="), lab.output
        assert not port_refuses(port)
        kernel_pid = lab.start_kernel(port, token)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            notices = [line for line in course_lines(lab) if "allow-root" in line or "as root" in line]
            assert len(notices) == 1 and "--allow-root" in notices[0], course_lines(lab)
        info_files = list((tmp_path / "runtime").glob(f"jpserver-{lab.server_pid}*"))
        assert info_files, "the server wrote no runtime file"

        stopped = time.monotonic()
        if how == "parent dies":
            lab.parent.send_signal(signal.SIGKILL)
        else:
            os.kill(lab.course_pid, getattr(signal, how))
        left = wait_gone([lab.course_pid, lab.server_pid, kernel_pid], STOP_LIMIT_S)
        seconds = time.monotonic() - stopped
        print(f"\n[course lab] {how}: course.py, JupyterLab and its kernel gone in {seconds:.1f} s")
        assert not left, (f"{how}: still running after {STOP_LIMIT_S} s: "
                          f"{ {lab.course_pid: 'course.py', lab.server_pid: 'JupyterLab', kernel_pid: 'kernel'}[left[0]]}"
                          f"\n{lab.output}")
        assert port_refuses(port), f"port {port} still answers after {how}"
        with socket.socket() as s:  # free for the next start, as it would be for `course.py lab --port` again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        assert not any(p.exists() for p in info_files), "the server did not stop cleanly (runtime file left)"
        if how != "SIGKILL":  # course.py said why it stopped
            lab.wait_for(r"\[course\] stopping JupyterLab", timeout_s=5)
    finally:
        lab.close()


@pytest.mark.timeout(START_LIMIT_S + 60)
def test_busy_port_is_reported(course_root, tmp_path):
    """A port already taken (say, by a JupyterLab left running) makes JupyterLab move on; course.py says so."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        lab = CourseLab(course_root, tmp_path, ["--no-browser", "--port", str(busy)])
        try:
            url, port, token = lab.wait_until_running()
            assert port != busy and f":{port}/" in url, lab.output
            lab.wait_for(rf"\[course\] port {busy} was in use .*took port {port}", timeout_s=5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=30) as response:
                assert response.status == 200
            os.kill(lab.course_pid, signal.SIGTERM)
            assert not wait_gone([lab.course_pid, lab.server_pid], STOP_LIMIT_S), lab.output
        finally:
            lab.close()
