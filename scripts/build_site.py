"""Build the course as a static web site: every lecture notebook with its outputs, the syllabus, the
troubleshooting page and the licence, rendered by Sphinx with MyST-NB (no network needed).

    .venv/bin/python scripts/build_site.py                 # -> build/site/index.html
    .venv/bin/python scripts/build_site.py --no-execute    # fast: outputs only where executed copies exist
    .venv/bin/python scripts/build_site.py --fresh         # execute every notebook again

Lecture notebooks are notebooks/NN_*.ipynb (a glob: new ones join the site by themselves). Each is rendered
from an executed copy in build/executed/NAME.ipynb when that copy is current: the same cells, run with Jupyter's
inline matplotlib backend (so that figures are outputs; its metadata says so), no error, and newer than the
notebook and every course_lib/*.py. Otherwise the notebook is executed here (cwd notebooks/, as
tests/test_notebooks.py does) and the copy saved for next time, or, with --no-execute, rendered without outputs.
Executing all eight lectures takes about 1.5 minutes on an idle 2-core CPU, many times that on a busy one.

Work files go beside the output, in OUT-work/: src (the pages as Sphinx reads them), doctrees, html (Sphinx's
output, moved to OUT when the build succeeds) and jupyter_execute (MyST-NB's copies of the outputs' images).
The site's configuration is docs/site/conf.py and its front page docs/site/index.md. Exit code 0 when
the site was built, 1 when a notebook failed to execute or Sphinx reported an error or a warning.
"""
import argparse
import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SITE_CONFIG = ROOT / "docs" / "site"
PAGES = ["docs/syllabus.md", "docs/troubleshooting.md", "docs/model.md"]  # copied to the same paths in the site's source
EXECUTED_DIR = ROOT / "build" / "executed"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
CELL_TIMEOUT_S = 900


def say(message):
    print("[site] " + message, flush=True)


def lecture_notebooks():
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def cell_sources(nb):
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def usable_copy(source_nb, copy_path, newer_than):
    """The executed copy at copy_path if it is of the same cells as source_nb, was run with the inline backend (its
    metadata says so: course.mpl_backend), every code cell ran without an error, and it is newer than `newer_than`
    (a timestamp); else None."""
    if not copy_path.exists() or copy_path.stat().st_mtime < newer_than:
        return None
    try:
        nb = nbformat.read(copy_path, as_version=4)
    except Exception:  # a half-written or foreign file: execute again
        return None
    if cell_sources(nb) != cell_sources(source_nb):
        return None
    if nb.metadata.get("course", {}).get("mpl_backend") != INLINE_BACKEND:  # e.g. run under Agg: no figures
        return None
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None or any(o.get("output_type") == "error" for o in cell.outputs):
            return None
    return nb


def execute(nb, path):
    """Run nb top to bottom as tests/test_notebooks.py does; return the elapsed seconds."""
    from nbclient import NotebookClient

    # The kernel inherits the environment. Jupyter's inline backend needs no display, as Agg does, and it also
    # turns every figure into a PNG output; under Agg (tests/test_notebooks.py) figures are drawn but never shown.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.monotonic()
    client.execute()
    nb.metadata["course"] = {"mpl_backend": INLINE_BACKEND}  # marks a copy whose figures are outputs
    return time.monotonic() - start


def for_the_web(nb):
    """A copy of nb with static outputs only. A widget needs a live kernel; its display bundle keeps what a
    static page can show (course_lib.widgets adds a PNG of the explorer's default figure). Progress bars
    (tqdm's widgets, whose text is their state when first shown) are dropped."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data and WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if set(data) <= {"text/plain"}:
                    continue
            outputs.append(output)
        cell.outputs = outputs
    return nb


def stage(src, execute_missing, fresh, executed_dir):
    """Fill src with the pages Sphinx reads; return {notebook name: how its outputs were obtained}."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copy2(SITE_CONFIG / "index.md", src / "index.md")
    for page in PAGES:
        (src / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / page, src / page)
    (src / "license.md").write_text("# Licence\n\n" + (ROOT / "LICENSE").read_text(encoding="utf-8"), encoding="utf-8")

    library_mtime = max(p.stat().st_mtime for p in (ROOT / "course_lib").rglob("*.py"))
    how = {}
    for path in lecture_notebooks():
        nb = nbformat.read(path, as_version=4)
        saved = executed_dir / path.name
        executed = None if fresh else usable_copy(nb, saved, max(library_mtime, path.stat().st_mtime))
        if executed is not None:
            how[path.name] = "executed copy " + os.path.relpath(saved, ROOT)
            nb = executed
        elif execute_missing:
            say(f"executing {path.name} ...")
            try:
                elapsed = execute(nb, path)
            except Exception as error:  # CellExecutionError, a timeout, a dead kernel
                raise SystemExit(f"[site] {path.name} failed to execute; fix it or use --no-execute:\n{error}")
            executed_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, saved)
            how[path.name] = f"executed now in {elapsed:.0f} s"
        else:
            how[path.name] = "not executed (no outputs)"
        nbformat.write(for_the_web(nb), src / "notebooks" / path.name)
        say(f"{path.name}: {how[path.name]}")
    return how


def build(out, execute_missing=True, fresh=False, executed_dir=EXECUTED_DIR):
    """Build the site into out; return Sphinx's exit code."""
    out = Path(out).resolve()
    work = out.with_name(out.name + "-work")
    if not lecture_notebooks():
        raise SystemExit(f"[site] no lecture notebooks notebooks/NN_*.ipynb in {NOTEBOOK_DIR}")
    stage(work / "src", execute_missing, fresh, Path(executed_dir))
    html = work / "html"  # MyST-NB writes its image files beside Sphinx's output folder: keep them in work
    for folder in (html, out):
        if folder.exists():
            shutil.rmtree(folder)
    start = time.monotonic()
    # -E: a fresh environment (the sources were all just rewritten); -W --keep-going: any warning fails the build,
    # after all of them are reported; -q: only warnings and errors.
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", "-W", "--keep-going",
           "-c", str(SITE_CONFIG), "-d", str(work / "doctrees"), str(work / "src"), str(html)]
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(html), str(out))
        say(f"built {os.path.relpath(out / 'index.html', Path.cwd())} in {time.monotonic() - start:.0f} s (Sphinx)")
    else:
        say(f"Sphinx failed (exit code {code}); see the messages above")
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "site"), help="output folder (default build/site)")
    parser.add_argument("--no-execute", action="store_true",
                        help="execute nothing: notebooks without a usable executed copy are shown without outputs")
    parser.add_argument("--fresh", action="store_true", help="execute every notebook, ignoring executed copies")
    parser.add_argument("--executed", default=str(EXECUTED_DIR),
                        help="where executed copies are read and saved (default build/executed)")
    args = parser.parse_args(argv)
    if args.fresh and args.no_execute:
        parser.error("--fresh and --no-execute contradict each other")
    return build(args.out, execute_missing=not args.no_execute, fresh=args.fresh, executed_dir=args.executed)


if __name__ == "__main__":
    sys.exit(main())
