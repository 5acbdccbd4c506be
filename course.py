#!/usr/bin/env python3
"""Set up the course's virtual environment, then open the notebooks or run the tests.

    python3 course.py lab  [jupyter lab options, e.g. --no-browser --port 8888]
    python3 course.py test [pytest options, e.g. -x tests/test_schedules.py]
    python3 course.py site [--no-execute] [--out build/site]   (the course as a web site: build/site/index.html)

`lab` starts JupyterLab at the repo root (the course root nbgrader's Formgrader needs) with the file browser
on notebooks/, prints the address it took, and stops it, kernels included, when this script stops (Ctrl-C,
SIGTERM, SIGHUP, or the program that started it going away).
The first run creates .venv/ in the repo, installs torch (COURSE_TORCH, default torch==2.13.0)
and then this repo with its test extra. Later runs skip the set-up until pyproject.toml changes.
COURSE_TORCH may hold any pip arguments, e.g. a CPU-only build (a much smaller download):
    COURSE_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
Standard library only; Linux, macOS and Windows; Python 3.10 or newer.
"""
import sys

if sys.version_info < (3, 10):
    sys.exit("[course] Python 3.10 or newer is needed; this is %s. Install a newer Python and "
             "run this script with it (e.g. python3.11 course.py lab)." % sys.version.split()[0])

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "course-setup.stamp"
DEFAULT_TORCH = "torch==2.13.0"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def say(message):
    print("[course] " + message, flush=True)


def run(cmd, **kwargs):
    """Run cmd, return its exit code. Ctrl-C goes to the child too (same process group); wait for it to end."""
    proc = subprocess.Popen([str(c) for c in cmd], **kwargs)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            pass


def check(cmd, what):
    code = run(cmd, cwd=ROOT)
    if code != 0:
        sys.exit("[course] %s failed (exit code %d); see the messages above." % (what, code))


def pip_install(*args):
    check([PYTHON, "-m", "pip", "install", "--disable-pip-version-check", *args], "pip install")


def create_venv():
    if PYTHON.exists():
        return
    if VENV.exists():  # half-made by an earlier failed run
        shutil.rmtree(VENV)
    say("creating .venv with Python %s" % sys.version.split()[0])
    code = run([sys.executable, "-m", "venv", VENV], cwd=ROOT)
    if code != 0 or not PYTHON.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        sys.exit("[course] could not create the virtual environment .venv. On Debian or Ubuntu, "
                 "install the venv module first: sudo apt install python3-venv")


def set_up():
    """Create .venv and install what is needed; skip the work done already."""
    started = time.monotonic()
    create_venv()
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    has_torch = subprocess.run(
        [str(PYTHON), "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"]
    ).returncode == 0
    if has_torch:
        say("torch is already installed in .venv; keeping it")
    else:
        torch_spec = os.environ.get("COURSE_TORCH", DEFAULT_TORCH)
        say("installing %s (set COURSE_TORCH to change)" % torch_spec)
        pip_install(*shlex.split(torch_spec))
    say("installing the course (pip install -e .[test])")
    pip_install("-e", ".[test]")
    STAMP.write_text(wanted + "\n")
    say("set-up done in %.0f s" % (time.monotonic() - started))


def activated_env():
    """The environment as `source .venv/bin/activate` would leave it: tools that the course's packages
    start by name (nbgrader runs `alembic`, Jupyter finds its kernels) come from .venv."""
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    return env


# Run by the venv's Python instead of `python -m jupyterlab` (same arguments). Two threads watch over the server:
# one writes its port and URL to $COURSE_LAB_INFO once it listens; the other reads stdin, a pipe from course.py
# that course.py never writes to, so end-of-file means course.py closed it (to stop the lab) or died, however it
# died. Either way the server then stops as on SIGTERM: it shuts its kernels down and removes its runtime file.
LAB_LAUNCHER = r"""
import json, os, runpy, sys, threading, time

def server():
    module = sys.modules.get('jupyter_server.serverapp')
    app_class = getattr(module, 'ServerApp', None)
    return app_class.instance() if app_class is not None and app_class.initialized() else None

def report(path):
    while True:
        time.sleep(0.2)
        app = server()
        if app is not None and os.path.exists(getattr(app, 'info_file', '') or ''):
            break
    info = {'port': app.port, 'url': app.local_url, 'token': app.identity_provider.token, 'pid': os.getpid(),
            'root_dir': os.path.abspath(app.root_dir)}
    with open(path + '.part', 'w') as f:
        json.dump(info, f)
    os.replace(path + '.part', path)

def lifeline():
    try:
        sys.stdin.buffer.read()
    except (OSError, ValueError):
        pass
    for _ in range(150):
        app = server()
        if app is not None and getattr(app, 'io_loop', None) is not None:
            app.io_loop.add_callback(app.stop)
            break
        time.sleep(0.2)
    time.sleep(30)
    os._exit(1)

if os.environ.get('COURSE_LAB_INFO'):
    threading.Thread(target=report, args=(os.environ['COURSE_LAB_INFO'],), daemon=True).start()
threading.Thread(target=lifeline, daemon=True).start()
sys.argv = ['jupyter-lab', *sys.argv[1:]]
runpy.run_module('jupyterlab', run_name='__main__', alter_sys=True)
"""
# Options that choose the server's folders: when the user gives one, course.py sets neither.
FOLDER_OPTIONS = ("--notebook-dir", "--preferred-dir", "--ServerApp.root_dir", "--ServerApp.notebook_dir",
                  "--ServerApp.preferred_dir", "--ContentsManager.preferred_dir", "--FileContentsManager.preferred_dir")
STOP_GRACE_S = 15  # a clean stop (kernels shut down) takes a second or two; then SIGTERM, then SIGKILL


class Stop(Exception):
    """Raised in the main thread by the handler of SIGTERM, SIGHUP or SIGBREAK."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def lab_command(extra, root=ROOT, python=PYTHON):
    """The command that starts JupyterLab for the course in `root` (run it with cwd=root). The server's root is the
    course root, so that nbgrader's Formgrader finds nbgrader_config.py and the gradebook there (it needs the course
    root inside the server's root); the file browser opens on notebooks/, where students work."""
    options = []
    subcommand = extra and not extra[0].startswith("-")  # `lab build`, `lab list`, ...: passed on as they are
    if not subcommand and not any(arg.split("=")[0] in FOLDER_OPTIONS for arg in extra):
        options = ["--ServerApp.root_dir=" + str(root), "--ContentsManager.preferred_dir=notebooks"]
    return [str(python), "-c", LAB_LAUNCHER, *options, *extra]


def asked_port(extra):
    """The port given on the command line (--port N, --port=N, --ServerApp.port=N), else None."""
    port = None
    for i, arg in enumerate(extra):
        name, _, value = arg.partition("=")
        if name in ("--port", "--ServerApp.port"):
            port = value or (extra[i + 1] if i + 1 < len(extra) else None)
    return port


def start_lab(extra, root=ROOT, python=PYTHON, env=None, info_path=None):
    """Start JupyterLab in its own process group (so that Ctrl-C reaches course.py, which stops it in order),
    with stdin a pipe that course.py never writes to: the launcher's lifeline (LAB_LAUNCHER)."""
    env = dict(activated_env() if env is None else env)
    if info_path is not None:
        env["COURSE_LAB_INFO"] = str(info_path)
    if os.name == "nt":
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        group = {"start_new_session": True}
    return subprocess.Popen(lab_command(extra, root, python), cwd=str(root), env=env, stdin=subprocess.PIPE,
                            **group)


def stop_lab(proc, grace_s=STOP_GRACE_S):
    """Stop JupyterLab: close its lifeline (it stops as on SIGTERM), then SIGTERM, then kill. Returns its code."""
    if proc.poll() is not None:
        return proc.returncode
    say("stopping JupyterLab and its kernels")
    steps = [(lambda: proc.stdin.close(), grace_s), (proc.terminate, 5), (proc.kill, 5)]
    for action, wait_s in steps:
        try:
            action()
        except OSError:
            pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                if proc.poll() is not None:
                    return proc.returncode
                time.sleep(0.1)
            except (KeyboardInterrupt, Stop):  # asked again while stopping: go on to the next, harder step
                break
    return proc.wait()


def report_lab(info_path, port_asked):
    """Print where JupyterLab listens, once the launcher has written it. True once printed."""
    try:
        info = json.loads(Path(info_path).read_text())
    except (OSError, ValueError):
        return False
    port = info.get("port")
    say("JupyterLab is running at %s (port %s; Ctrl-C here stops it)" % (info.get("url"), port))
    if port_asked is not None and str(port) != str(port_asked):
        say("port %s was in use (another JupyterLab still running?), so JupyterLab took port %s" % (port_asked, port))
    return True


def handle_stop_signals():
    """SIGTERM, SIGHUP (the terminal closed) and Windows' SIGBREAK raise Stop; SIGINT raises KeyboardInterrupt
    as usual. A signal set to be ignored when course.py started (nohup) stays ignored."""
    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_stop)


def lab(extra, poll_s=0.5):
    (ROOT / "notebooks").mkdir(exist_ok=True)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any(
            arg.split("=")[0] in ("--allow-root", "--ServerApp.allow_root") for arg in extra):
        say("running as root (a container?): passing --allow-root to JupyterLab")
        extra = [*extra, "--allow-root"]
    say("starting JupyterLab at the repo root, with the file browser on notebooks/ (Ctrl-C to stop)")
    parent = os.getppid() if os.name != "nt" else None  # Windows: os.getppid() never changes; not watched there
    info_dir = tempfile.mkdtemp(prefix="course-lab-")
    info_path = os.path.join(info_dir, "server.json")
    handle_stop_signals()
    proc = None
    try:
        proc = start_lab(extra, info_path=info_path)
        reported, port_asked = False, asked_port(extra)
        while proc.poll() is None:
            time.sleep(poll_s)
            reported = reported or report_lab(info_path, port_asked)
            if parent is not None and os.getppid() != parent:
                say("the program that started course.py has ended")
                break
        return stop_lab(proc)
    except (KeyboardInterrupt, Stop) as stop:
        if proc is None:
            return 1
        if isinstance(stop, Stop):
            say("received %s" % stop)
        return stop_lab(proc)
    finally:
        shutil.rmtree(info_dir, ignore_errors=True)


def test(extra):
    say("running the tests: pytest " + " ".join(extra))
    return run([PYTHON, "-m", "pytest", *extra], cwd=ROOT, env=activated_env())


def site(extra):
    say("building the course's web site: scripts/build_site.py " + " ".join(extra))
    return run([PYTHON, ROOT / "scripts" / "build_site.py", *extra], cwd=ROOT, env=activated_env())


def main():
    command, extra = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command not in ("lab", "test", "site"):
        print(__doc__.strip())
        sys.exit(0 if command in ("-h", "--help") else 2)
    set_up()
    sys.exit({"lab": lab, "test": test, "site": site}[command](extra))


if __name__ == "__main__":
    main()
