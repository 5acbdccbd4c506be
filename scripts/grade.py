#!/usr/bin/env python3
"""The instructor's grading workflow over nbgrader: one command per step of a term (run from the repo root).

    python scripts/grade.py release   ASSIGNMENT [--exchange]        student version (and to nbgrader's exchange)
    python scripts/grade.py collect   ASSIGNMENT [FOLDER]            LMS download (zip_collect) or the exchange
    python scripts/grade.py autograde ASSIGNMENT [--student ID] [--jobs N] [--timeout S] [--no-sandbox]
    python scripts/grade.py feedback  ASSIGNMENT [--student ID]      HTML per student, hidden tests stripped
    python scripts/grade.py export    ASSIGNMENT                     grades/ASSIGNMENT.csv, with a status per student
    python scripts/grade.py summary   ASSIGNMENT                     which checks failed most often

--root DIR grades a course root other than the current folder. Everything a step finds wrong with a submission
(an unreadable file, a cell that timed out, code that tampers with the grader, ...) goes to
reports/ASSIGNMENT/problems.csv and is printed; every student gets a status (graded, blank, unreadable, missing,
crashed, flagged, timed out) with its reason in the export and the summary. `autograde --student ID` re-grades one
student and then regenerates that student's feedback, the export and (if there is one) the summary; docs/instructor.md
explains each step. Autograding runs every kernel in a sandbox and computes the verdicts outside it
(autograde_tests/sandbox.py, judge.py); it refuses to run without a working sandbox unless --no-sandbox is given,
which is then written into problems.csv and the summary.
"""
import argparse
import collections
import csv
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

BIN = str(Path(sys.executable).parent)
os.environ["PATH"] = os.pathsep.join([BIN, os.environ.get("PATH", "")])  # nbgrader starts `alembic` by name


def nbgrader(root, *args):
    """Run `python -m nbgrader ARGS` in the course root; return its log, exit with it if it fails."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nbgrader {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def load_api(root, timeout=None):
    """nbgrader's Python API with the course root's nbgrader_config.py loaded."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    if timeout is not None:
        config.Execute.timeout = timeout
    return NbGraderAPI(config=config)


def gradebook(root):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{Path(root) / 'gradebook.db'}")


# --- release and collect --------------------------------------------------------------------------------------

def release(root, assignment, exchange=False):
    nbgrader(root, "generate_assignment", assignment, "--force")
    print(f"student version written to notebooks/{assignment}/")
    if exchange:
        nbgrader(root, "release_assignment", assignment, "--force")
        print(f"released to nbgrader's exchange; students run: nbgrader fetch_assignment {assignment}")


def collect(root, assignment, folder=None):
    """Files from an LMS (named <student>_<notebook>.ipynb, zips allowed) or, without a folder, the exchange."""
    if folder is None:
        print(nbgrader(root, "collect", assignment, "--update"))
        return
    archive = Path(root) / "downloaded" / assignment / "archive"
    shutil.rmtree(archive, ignore_errors=True)
    archive.mkdir(parents=True)
    refused = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix == ".zip":
            refused += unpack_zip(path, archive)
        elif path.is_file():
            shutil.copy2(path, archive / path.name)
    for line in refused:
        print(f"refused: {line}")
    if refused:
        report = Path(root) / "reports" / assignment / "collect_refused.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("\n".join(refused) + "\n")
    log = nbgrader(root, "zip_collect", assignment, "--force", "--strict")
    for line in log.splitlines():
        if "Skipped" in line or "WARNING" in line:
            print(line)
    students = sorted(p.parent.name for p in (Path(root) / "submitted").glob(f"*/{assignment}"))
    print(f"{len(students)} students in submitted/: {', '.join(students)}")


STUDENT_NAME = re.compile(r"^(?P<student>[A-Za-z0-9.-]+)_(?P<rest>.+)$")  # as FileNameCollectorPlugin reads names


def unpack_zip(path, archive):
    """A student's zip: its notebooks go to the archive under the zip's own student id (the name of the file the
    student uploaded), never under an id found inside it. A notebook whose name claims another student is refused
    (that file alone) and reported; paths inside the zip are never used as paths (no zip-slip)."""
    import zipfile

    match = STUDENT_NAME.match(path.stem)
    if not match:
        return [f"{path.name}: the zip's name does not start with a student id (<student>_...)"]
    student, refused = match.group("student"), []
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = Path(info.filename.replace("\\", "/")).name
                if info.is_dir() or not name.endswith(".ipynb") or name.startswith("."):
                    continue
                inner = STUDENT_NAME.match(name)
                if inner and inner.group("student") != student:
                    refused.append(f"{path.name}: {info.filename} names student {inner.group('student')!r}, but the "
                                   f"zip is {student!r}'s upload; not collected for anyone")
                    continue
                target = name if inner else f"{student}_{name}"
                (archive / target).write_bytes(z.read(info))
    except zipfile.BadZipFile:
        refused.append(f"{path.name}: not a readable zip file")
    return refused


# --- autograde -------------------------------------------------------------------------------------------------

def source_cells(gb, assignment):
    """{notebook: {grade_id: (cell_type, source, locked, is_graded)}} from the gradebook."""
    cells = {}
    for notebook in gb.find_assignment(assignment).notebooks:
        graded = {c.name for c in notebook.grade_cells}
        cells[notebook.name] = {c.name: (c.cell_type, c.source, c.locked, c.name in graded)
                                for c in notebook.source_cells}
    return cells


def set_grades(root, assignment, student, score, needs_review, only=None):
    """Give a submission's grades (all, or those named in `only`) an auto score, creating the submission if needed."""
    with gradebook(root) as gb:
        gb.update_or_create_student(student)
        submission = gb.update_or_create_submission(assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if only is None or grade.name in only:
                    grade.auto_score, grade.needs_manual_grade = score, needs_review
        gb.db.commit()


def error_problems(nb):
    """Timeouts, memory errors, kernel deaths, tampering and truncated output found in an autograded notebook."""
    from autograde_tests.integrity import TRUNCATED_MARK
    from autograde_tests.judge import TIMEOUT_ENAMES

    problems = []
    for cell in nb.cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id") or cell.get("id")
        for out in cell.get("outputs", []):
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            if TRUNCATED_MARK in text:
                problems.append(f"cell {name} printed too much; its output was truncated")
            if out.get("output_type") != "error":
                continue
            message = f"{out.ename}: {out.evalue}"
            if out.ename in TIMEOUT_ENAMES or "did not return within the time limit" in message:
                problems.append(f"cell {name} ran past the time limit and was interrupted ({out.evalue})")
            elif out.ename == "MemoryError" or "allocate" in out.evalue:
                problems.append(f"cell {name} hit the memory limit ({message[:120]})")
    return list(dict.fromkeys(problems))


def sweep_links(folder):
    """Remove links and special files from a submission folder before anything copies, reads or chmods it (a student
    can hand in a link through nbgrader's exchange; followed, it would reach the gradebook or a classmate's files).
    The sandboxed kernel writes only into a private copy, so nothing it makes needs sweeping afterwards.
    Returns a problem message, or []."""
    removed = []
    for path in sorted(Path(folder).rglob("*"), reverse=True) if Path(folder).exists() else []:
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            path.unlink()
            removed.append(path.name)
    return [f"the submission held links or special files ({', '.join(removed[:5])}): removed before grading"
            ] if removed else []


def grade_one(root, assignment, student, timeout=None):
    """Autograde one student in course root `root`; return the problems found (messages for the instructor)."""
    from autograde_tests import integrity

    root = Path(root)
    folder = root / "submitted" / student / assignment
    with gradebook(root) as gb:
        sources = source_cells(gb, assignment)
    shutil.rmtree(root / "autograded" / student / assignment, ignore_errors=True)  # never report an older grading
    problems, readable = [], {}
    for name in sources:
        path = folder / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"no {path.relative_to(root)}: its checks score 0")
            continue
        try:
            readable[name] = nbformat.read(path, as_version=4)
            nbformat.validate(readable[name])
        except Exception as e:
            problems.append(f"{path.relative_to(root)} is not a readable notebook ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:150] if str(e) else ''}): scored 0, ask for a new upload")
    if len(readable) < sum((folder / f"{n}.ipynb").exists() for n in sources):
        set_grades(root, assignment, student, 0.0, False)
        return problems
    flagged = {}  # notebook -> grade_ids to score 0 for review
    for name, nb in readable.items():
        problems += integrity.structure_report(nb, sources[name])
        locked = {gid for gid, (_, _, is_locked, _) in sources[name].items() if is_locked}
        findings = integrity.scan_notebook(nb, locked)
        if findings:
            first = findings[0][0]
            before = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells[:first]}
            flagged[name] = {gid for gid, cell in sources[name].items() if cell[3] and gid not in before}
            problems += [f"{name} cell {cell} line {line} {message}: checks after it score 0, review by hand"
                         for _, cell, line, message in findings]
        problems += [f"{name} {message} (score kept; review by hand)" for message in integrity.copied_reference(nb)]
    result = load_api(root, timeout).autograde(assignment, student, force=True, create=True)
    if not result["success"]:
        lines = (result.get("log", "") + result.get("error", "")).splitlines()
        errors = [line.strip() for line in lines if re.match(r"\s*[\w.]+(Error|Exception): ", line)
                  and "NbGraderException" not in line]
        problems.append(f"autograde failed ({errors[-1][:200] if errors else 'no message'}): scored 0, review by "
                        f"hand (a kernel that dies, e.g. os._exit or a segfault, loses the whole notebook)")
        set_grades(root, assignment, student, 0.0, True)
        return problems
    for name in sources:
        path = root / "autograded" / student / assignment / f"{name}.ipynb"
        if path.exists():
            problems += error_problems(nbformat.read(path, as_version=4))
    for name, ids in flagged.items():
        set_grades(root, assignment, student, 0.0, True, only=ids)
    return problems


def grade_safely(root, assignment, student, timeout=None):
    """grade_one, but an unexpected failure scores this one submission 0 instead of stopping the batch."""
    try:
        return grade_one(root, assignment, student, timeout)
    except Exception as e:
        set_grades(root, assignment, student, 0.0, True)
        return [f"grading failed ({type(e).__name__}: {str(e)[:200]}): scored 0, review by hand"]


def grade_in_temp_root(root, assignment, student, timeout=None):
    """grade_one in a private copy of the course root (own gradebook): safe to run in parallel (nbgrader#174)."""
    root = Path(root)
    temp = Path(tempfile.mkdtemp(prefix=f"grade-{student}-"))
    shutil.copy(root / "nbgrader_config.py", temp)
    shutil.copy(root / "gradebook.db", temp)
    for name in ("solutions", "notebooks"):
        if (root / name).exists():
            (temp / name).symlink_to((root / name).resolve())
    shutil.copytree(root / "submitted" / student, temp / "submitted" / student)
    return temp, grade_safely(temp, assignment, student, timeout)


def merge_grades(temp, root, assignment, student):
    """Copy one student's grades and autograded files from a private course root into the main one."""
    from nbgrader.api import MissingEntry

    with gradebook(temp) as src, gradebook(root) as dst:
        dst.update_or_create_student(student)
        try:
            done = src.find_submission(assignment, student)
        except MissingEntry:
            done = None
        target = dst.update_or_create_submission(assignment, student, timestamp=done.timestamp if done else None)
        for notebook in target.notebooks:
            for grade in notebook.grades:
                old = done and src.find_grade(grade.name, notebook.name, assignment, student)
                grade.auto_score = old.auto_score if old else 0.0
                grade.needs_manual_grade = old.needs_manual_grade if old else True
            for comment in notebook.comments:
                old = done and src.find_comment(comment.name, notebook.name, assignment, student)
                comment.auto_comment = old.auto_comment if old else None
        dst.db.commit()
    graded = temp / "autograded" / student / assignment
    dest = Path(root) / "autograded" / student / assignment
    shutil.rmtree(dest, ignore_errors=True)  # an unreadable re-upload leaves none: no older grading may stay
    if graded.exists():
        shutil.copytree(graded, dest)
    shutil.rmtree(temp, ignore_errors=True)


def write_problems(root, assignment, problems):
    """reports/ASSIGNMENT/problems.csv: the rows of re-graded students are replaced, the others kept."""
    path = Path(root) / "reports" / assignment / "problems.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["student"] not in problems]
    rows += [{"student": s, "problem": p} for s, found in problems.items() for p in found]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["student", "problem"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["student"]))
    return path


def _worker_init():
    """A --jobs worker is forked from a process that may have used torch's OpenMP threads, whose pool does not
    survive a fork: the judge's first parallel torch operation would hang. One thread per worker (as PyTorch's
    DataLoader workers do); the checks' tensors are small."""
    import torch

    torch.set_num_threads(1)


NO_SANDBOX = "graded WITHOUT the sandbox (--no-sandbox): student code ran with the grader's rights"


def student_score(root, assignment, student):
    """(score, max_score) of a student's submission in the gradebook, or None."""
    from nbgrader.api import MissingEntry

    with gradebook(root) as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return None
        return submission.score, submission.max_score


def autograde(root, assignment, student=None, jobs=1, timeout=None, sandbox=True):
    """Grade the whole batch (or one student, leaving the others untouched); return {student: problems}.

    With `student`: only that student's submission is graded (no other student's folder, notebook, gradebook row or
    problems.csv line is written), then that student's feedback, the export and, if one was written before, the
    summary are regenerated, and what was done is printed."""
    from autograde_tests.sandbox import sandbox_problem

    root = Path(root)
    if sandbox:
        problem = sandbox_problem()
        if problem:
            sys.exit(f"no working grading sandbox: {problem}. Install bubblewrap (docs/instructor.md, 'The sandbox'), "
                     f"or grade without it with --no-sandbox (reported in problems.csv and the summary)")
        os.environ.pop("COURSE_GRADING_SANDBOX", None)
    else:
        os.environ["COURSE_GRADING_SANDBOX"] = "0"
        print(f"WARNING: {NO_SANDBOX}")
    students = [student] if student else sorted(p.parent.name for p in (root / "submitted").glob(f"*/{assignment}"))
    if not students:
        sys.exit(f"no submissions in submitted/*/{assignment}/: run `collect` first")
    if student and not (root / "submitted" / student / assignment).is_dir():
        sys.exit(f"no submitted/{student}/{assignment}/: collect that student's submission first")
    before = student_score(root, assignment, student) if student else None
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's own session warnings, harmless
    start, problems = time.perf_counter(), {}
    swept = {s: sweep_links(root / "submitted" / s / assignment) for s in students}
    bar = tqdm(total=len(students), desc=f"autograde {assignment}", unit="submission")
    if jobs <= 1:
        for s in students:
            problems[s] = swept[s] + grade_safely(root, assignment, s, timeout)
            bar.update()
    else:
        with ProcessPoolExecutor(jobs, initializer=_worker_init) as pool:
            futures = {pool.submit(grade_in_temp_root, root, assignment, s, timeout): s for s in students}
            for future in as_completed(futures):
                s = futures[future]
                temp, found = future.result()
                problems[s] = swept[s] + found
                merge_grades(temp, root, assignment, s)  # one writer: this process, one student at a time
                bar.update()
    bar.close()
    if not sandbox:
        problems = {s: [NO_SANDBOX] + found for s, found in problems.items()}
    seconds = time.perf_counter() - start
    path = write_problems(root, assignment, problems)
    print(f"graded {len(students)} submissions in {seconds:.0f} s ({60 * len(students) / seconds:.1f} per minute)")
    for s in students:
        for p in problems[s]:
            print(f"  {s}: {p}")
    print(f"problems: {path.relative_to(root)}")
    if student:
        after = student_score(root, assignment, student)
        print(f"re-graded {student} only (score {_score_text(before)} -> {_score_text(after)}); no other student's "
              f"files, grades or report lines were touched")
        feedback(root, assignment, student)
        export(root, assignment)
        done = [f"feedback/{student}/{assignment}/", f"grades/{assignment}.csv"]
        if (root / "reports" / assignment / "summary.md").exists():
            summary(root, assignment, quiet=True)
            done.append(f"reports/{assignment}/summary.*")
        print(f"regenerated for {student}: {', '.join(done)} (release the new feedback to {student} again)")
    return problems


def _score_text(score):
    return "none" if score is None else f"{score[0]:g} / {score[1]:g}"


# --- statuses: what happened to each student's submission ----------------------------------------------------

UNREADABLE = "is not a readable notebook"
STATUSES = ("graded", "timed out", "flagged", "blank", "unreadable", "missing", "crashed")
COUNTED = ("graded", "timed out", "flagged")  # the statuses whose check results say something about the student's code


def read_problems(root, assignment):
    """{student: [problem]} from reports/ASSIGNMENT/problems.csv (empty when autograde has not run)."""
    path = Path(root) / "reports" / assignment / "problems.csv"
    found = collections.defaultdict(list)
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                found[row["student"]].append(row["problem"])
    return found


def _unchanged(folder, solution_sources):
    """True when every notebook of the submission is readable and no solution cell differs from the release."""
    for name, cells in solution_sources.items():
        path = folder / f"{name}.ipynb"
        if not path.exists():
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            return False
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id in cells and cell.get("source", "").strip() != cells[grade_id].strip():
                return False
    return True


def statuses(root, assignment):
    """{student: (status, reason)} for every student with a submission or a gradebook row, from problems.csv, the
    submitted notebooks and the gradebook. Status, first that applies: unreadable (a notebook that is not one),
    missing (nothing handed in), blank (the release handed in unchanged), crashed (the kernel died or grading
    failed: scored 0, review by hand), flagged (static scan or copy report: review by hand), timed out (a cell or a
    check ran past the time limit), graded. The reason lists the problems behind it (and any other problem found)."""
    from nbgrader.api import MissingEntry

    root = Path(root)
    problems = read_problems(root, assignment)
    with gradebook(root) as gb:
        try:
            record = gb.find_assignment(assignment)
        except MissingEntry:
            sys.exit(f"{assignment} is not in the gradebook: run `release` and `autograde` first")
        students = {s.id for s in gb.students}
        solutions = {}
        for notebook in record.notebooks:
            ids = {c.name for c in notebook.solution_cells}
            solutions[notebook.name] = {c.name: c.source for c in notebook.source_cells if c.name in ids}
    students |= {p.parent.name for p in (root / "submitted").glob(f"*/{assignment}") if p.is_dir()}
    result = {}
    for s in sorted(students):
        found = [p for p in problems.get(s, []) if p != NO_SANDBOX]
        folder = root / "submitted" / s / assignment
        handed_in = [n for n in solutions if (folder / f"{n}.ipynb").exists()]
        crashed = [p for p in found if p.startswith(("autograde failed", "grading failed"))]
        if [p for p in found if UNREADABLE in p]:
            status, first = "unreadable", [p for p in found if UNREADABLE in p]
        elif not handed_in:
            status, first = "missing", [f"no {', '.join(f'{n}.ipynb' for n in solutions)} handed in"]
        elif not crashed and _unchanged(folder, solutions):
            status, first = "blank", ["handed in as released: no solution cell was changed"]
        elif crashed:
            status, first = "crashed", crashed
        elif [p for p in found if "review by hand" in p]:
            status, first = "flagged", [p for p in found if "review by hand" in p]
        elif [p for p in found if "ran past the time limit" in p]:
            status, first = "timed out", [p for p in found if "ran past the time limit" in p]
        else:
            status, first = "graded", []
        result[s] = (status, "; ".join(dict.fromkeys(first + found)))
    return result


# --- feedback, export, summary --------------------------------------------------------------------------------

def hidden_lines(root, assignment):
    """The non-empty lines of every hidden-test block in the assignment's source notebooks."""
    from autograde_tests.integrity import HIDDEN_BEGIN, HIDDEN_END

    lines = set()
    for path in (Path(root) / "solutions" / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                inside = (inside or line.strip() == HIDDEN_BEGIN) and line.strip() != HIDDEN_END
                if inside and line.strip() and line.strip() != HIDDEN_BEGIN:
                    lines.add(line.strip())
    return lines


def html_text(path):
    """The text of an HTML file as a reader sees it (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", Path(path).read_text()))


NO_FEEDBACK = "NO_FEEDBACK.txt"


def feedback(root, assignment, student=None):
    """feedback/STUDENT/ASSIGNMENT/*.html for every student (or one), then: MathJax inlined from the installed package
    (math renders offline, no script from the network), test cells named in the table of contents, a check that no
    hidden test line reached any page, and for every student without a page a NO_FEEDBACK.txt that says why."""
    from autograde_tests.integrity import finish_feedback_page

    root = Path(root)
    status = statuses(root, assignment)
    who = [student] if student else sorted(status)
    graded = [s for s in who if list((root / "autograded" / s / assignment).glob("*.ipynb"))]
    if graded:
        nbgrader(root, "generate_feedback", assignment, "--force", *(["--student", student] if student else []))
    leaks, pages, without = [], [], []
    hidden = hidden_lines(root, assignment) | {"BEGIN HIDDEN TESTS", "hidden=True"}
    for s in who:
        folder = root / "feedback" / s / assignment
        for page in sorted(folder.glob("*.html")):
            if not (root / "autograded" / s / assignment / f"{page.stem}.ipynb").exists():
                page.unlink()  # from an earlier grading of a submission that has since been replaced
                continue
            try:
                page.write_text(finish_feedback_page(page.read_text()))
            except RuntimeError as e:
                sys.exit(f"{page}: {e}")
            text = html_text(page)
            leaks += [f"{page}: {line}" for line in hidden if line in text]
            pages.append(page)
        notebooks = sorted(p.stem for p in (root / "autograded" / s / assignment).glob("*.ipynb"))
        note = folder / NO_FEEDBACK
        if not notebooks:
            reason = status.get(s, ("missing", "no submission"))
            folder.mkdir(parents=True, exist_ok=True)
            note.write_text(f"No feedback page for {s} ({assignment}): {reason[0]}. {reason[1]}\n")
            without.append(f"{s} ({reason[0]}: {reason[1]})")
        elif note.exists():
            note.unlink()
    if leaks:
        sys.exit("hidden tests leaked into feedback (check GenerateFeedback in nbgrader_config.py):\n"
                 + "\n".join(leaks))
    print(f"{len(pages)} feedback pages in feedback/{student or '*'}/{assignment}/, no hidden test in any of them, "
          f"math inlined (no script from the network)")
    for line in without:
        print(f"  no feedback page: {line}; see feedback/{line.split(' ')[0]}/{assignment}/{NO_FEEDBACK}")
    return pages


def export(root, assignment):
    """grades/ASSIGNMENT.csv: nbgrader's CSV (one row per student) with two more columns, status and reason."""
    root = Path(root)
    path = root / "grades" / f"{assignment}.csv"
    path.parent.mkdir(exist_ok=True)
    nbgrader(root, "export", "--to", str(path), "--assignment", f"['{assignment}']")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []) + ["status", "reason"], list(reader)
    status = statuses(root, assignment)
    for row in rows:
        row["status"], row["reason"] = status.get(row["student_id"], ("missing", "no submission"))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    counts = collections.Counter(row["status"] for row in rows)
    print(f"grades written to {path.relative_to(root)}: "
          + ", ".join(f"{counts[k]} {k}" for k in STATUSES if counts[k]))
    return path


def verdicts(root, assignment, student):
    """{grade_id: (result, message)} of a student's graded test cells: result is passed, failed, timed out or not
    implemented, from the verdict the judge recorded in the cell (or, for an older notebook, from its output)."""
    from autograde_tests.judge import NOT_IMPLEMENTED, TIMEOUT_ENAMES, VERDICT_KEY

    found = {}
    for path in sorted((Path(root) / "autograded" / student / assignment).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            verdict = cell.metadata.get(VERDICT_KEY)
            if verdict:
                found[meta["grade_id"]] = (verdict["result"], verdict["message"])
                continue
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            message = f"{errors[0].ename}: {errors[0].evalue}" if errors else ""
            result = ("passed" if not errors else "timed out" if errors[0].ename in TIMEOUT_ENAMES else
                      "not implemented" if NOT_IMPLEMENTED in message else "failed")
            found[meta["grade_id"]] = (result, message)
    return found


NOTE = re.compile(r" \(note: \S+ failed its own check above; fix that first\)$")


def summary(root, assignment, quiet=False):
    """Per graded check, among the submissions whose results mean something (status graded, timed out or flagged;
    blank, unreadable, missing and crashed ones are counted apart): how many students attempted it (a function that
    still raises NotImplementedError was not attempted), how many of them failed it, and the failure message seen
    most often (the "fix that first" note left out, so that one mistake is counted once)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    status = statuses(root, assignment)
    rows = {}
    with gradebook(root) as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            for cell in notebook.grade_cells:
                if cell.cell_type == "code" and cell.name not in {c.name for c in notebook.solution_cells}:
                    rows[cell.name] = {"check": cell.name, "points": cell.max_score, "attempted": 0, "failed": 0}
    messages = collections.defaultdict(collections.Counter)
    not_attempted = collections.Counter()
    counted = [s for s, (st, _) in status.items() if st in COUNTED]
    for s in counted:
        for grade_id, (result, message) in verdicts(root, assignment, s).items():
            if grade_id not in rows:
                continue
            if result == "not implemented":
                not_attempted[grade_id] += 1
                continue
            rows[grade_id]["attempted"] += 1
            if result != "passed":
                rows[grade_id]["failed"] += 1
                messages[grade_id][NOTE.sub("", message)] += 1
    table = sorted(rows.values(), key=lambda r: (-r["failed"], -r["failed"] / max(r["attempted"], 1)))
    for row in table:
        row["failed %"] = round(100 * row["failed"] / max(row["attempted"], 1))
        common = messages[row["check"]].most_common(1)
        row["most common failure"] = common[0][0] if common else ""
        row["seen"] = common[0][1] if common else 0
        row["not attempted"] = not_attempted[row["check"]]
    out = root / "reports" / assignment
    out.mkdir(parents=True, exist_ok=True)
    columns = ["check", "points", "attempted", "failed", "failed %", "most common failure", "seen", "not attempted"]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(table)
    counts = collections.Counter(st for st, _ in status.values())
    lines = [f"{len(status)} students: " + ", ".join(f"{counts[k]} {k}" for k in STATUSES if counts[k]) + ".",
             f"The table counts the {len(counted)} submissions graded, timed out or flagged; a check's *attempted* "
             f"leaves out those whose function still raises NotImplementedError (*not attempted*).", ""]
    apart = [(s, st, reason) for s, (st, reason) in status.items() if st not in COUNTED]
    if apart:
        lines += ["Left out of the failure counts:", ""]
        lines += [f"- {s}: {st} ({reason})" for s, st, reason in apart]
        lines.append("")
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "/").replace("\n", " ") for c in columns) + " |"
              for row in table]
    notes = sorted((root / "feedback").glob(f"*/{assignment}/{NO_FEEDBACK}"))
    if notes:
        lines += ["", "Without a feedback page (tell these students yourself):", ""]
        lines += [f"- {note.parts[-3]}: {note.read_text().strip()}" for note in notes]
    problems_csv = out / "problems.csv"
    unsandboxed = problems_csv.exists() and NO_SANDBOX in problems_csv.read_text()
    if unsandboxed:
        lines = [f"**Warning: some submissions were {NO_SANDBOX}.**", ""] + lines
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(table) + 1.2))
    ax.barh([r["check"] for r in table][::-1], [r["failed %"] for r in table][::-1], color="C3")
    ax.set_xlabel("students who attempted the check and failed it (%)")
    ax.set_xlim(0, 100)
    ax.set_title(f"{assignment}: checks failed most often ({len(counted)} submissions counted)")
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=100)
    plt.close(fig)
    if not quiet:
        print("\n".join(lines))
    print(f"written: reports/{assignment}/summary.md, summary.csv and summary.png")
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="course root: the folder with nbgrader_config.py (default: .)")
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("release", help="write the student version (and release it to the exchange)")
    p.add_argument("assignment")
    p.add_argument("--exchange", action="store_true", help="also copy it to nbgrader's exchange")
    p = steps.add_parser("collect", help="submissions from an LMS download folder, or from the exchange")
    p.add_argument("assignment")
    p.add_argument("folder", nargs="?", help="files named <student>_<notebook>.ipynb (zips allowed)")
    p = steps.add_parser("autograde", help="grade all submissions, or one student's")
    p.add_argument("assignment")
    p.add_argument("--student", help="re-grade only this student; the others are not touched")
    p.add_argument("--jobs", type=int, default=1, help="grade N submissions at a time (separate gradebooks)")
    p.add_argument("--timeout", type=int, help="seconds per cell (default: nbgrader_config.py's)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="grade without the bubblewrap sandbox (unsafe; written into problems.csv and the summary)")
    for name, text in [("feedback", "feedback HTML without hidden tests"), ("export", "grades CSV with statuses"),
                       ("summary", "which checks failed most often: table and bar chart")]:
        steps.add_parser(name, help=text).add_argument("assignment")
    steps.choices["feedback"].add_argument("--student", help="only this student's feedback")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if not (root / "nbgrader_config.py").exists():
        sys.exit(f"{root} has no nbgrader_config.py: run this from the repo root or pass --root")
    if args.step == "release":
        release(root, args.assignment, args.exchange)
    elif args.step == "collect":
        collect(root, args.assignment, args.folder)
    elif args.step == "autograde":
        autograde(root, args.assignment, args.student, args.jobs, args.timeout, sandbox=not args.no_sandbox)
    elif args.step == "feedback":
        feedback(root, args.assignment, args.student)
    else:
        {"export": export, "summary": summary}[args.step](root, args.assignment)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # autograde_tests/ from the repo
    main()
