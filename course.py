#!/usr/bin/env python3
"""Set up the course's virtual environment, then open the notebooks or run the tests.

    python3 course.py lab  [jupyter lab options, e.g. --no-browser --port 8888]
    python3 course.py test [pytest options, e.g. -x tests/test_schedules.py]

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
import os
import shlex
import shutil
import subprocess
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
    """Run cmd, return its exit code. Ctrl-C goes to the child (jupyter asks before it stops)."""
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


def lab(extra):
    notebooks = ROOT / "notebooks"
    notebooks.mkdir(exist_ok=True)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        say("running as root (a container?): passing --allow-root to JupyterLab")
        extra = [*extra, "--allow-root"]
    say("starting JupyterLab in notebooks/ (Ctrl-C to stop)")
    return run([PYTHON, "-m", "jupyterlab", *extra], cwd=notebooks, env=activated_env())


def test(extra):
    say("running the tests: pytest " + " ".join(extra))
    return run([PYTHON, "-m", "pytest", *extra], cwd=ROOT, env=activated_env())


def main():
    command, extra = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command not in ("lab", "test"):
        print(__doc__.strip())
        sys.exit(0 if command in ("-h", "--help") else 2)
    set_up()
    sys.exit(lab(extra) if command == "lab" else test(extra))


if __name__ == "__main__":
    main()
