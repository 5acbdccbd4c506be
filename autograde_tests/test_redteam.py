"""Red team: a batch of attack submissions (autograde_tests/redteam) graded through scripts/grade.py, --jobs 2.

Two honest students (the solution) sit before and after the attackers, and a blank submission is the floor. Then:
every cheat scores no more than the blank; the honest students get full marks, with grades, submitted files and
feedback exactly as in a batch without the attackers; the repo's tracked files and the course root are unchanged;
no feedback page holds hidden-test text (plain or base64) or any script, event handler or javascript: URL from a
student; nothing any attacker started is still running; nobody reached the grader over the network; and a zip
that names a classmate is refused by collect.
"""
import base64
import hashlib
import html.parser
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograde_tests.faults import load_grade_script, quick, write_submission
from autograde_tests.pipeline import copy_course
from autograde_tests.redteam import MARK, attacks, build

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "assignment1"
MAX_SCORE = 17.0
HONEST = ["a-honest", "z-honest"]  # graded before and after every attacker (sorted order)
pytestmark = [pytest.mark.timeout(1200), pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]
grade = load_grade_script()


class Listener:
    """A TCP server on the grader's loopback that records whether anybody connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port, self.connections, self.running = self.sock.getsockname()[1], 0, True
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.running:
            try:
                self.sock.accept()[0].close()
                self.connections += 1
            except OSError:
                pass

    def close(self):
        self.running = False
        self.sock.close()


def tracked_hashes():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {f: hashlib.sha256((REPO / f).read_bytes()).hexdigest() for f in files if (REPO / f).is_file()}


def tree_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and not p.is_symlink()}


def scores(root):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.find_assignment(ASSIGNMENT).submissions}


def marked_processes():
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"{MARK}-SLEEPER" in line or "sleep 901" in line]


def grade_batch(root, submissions):
    grade.release(root, ASSIGNMENT)
    solution = nbformat.read(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    bases = {"solution": quick(solution), "blank": quick(release)}
    for student, (base, changes) in submissions.items():
        write_submission(root, ASSIGNMENT, student, build(bases[base], changes))
    submitted = {s: tree_hashes(root / "submitted" / s) for s in submissions}
    problems = grade.autograde(root, ASSIGNMENT, jobs=2, timeout=30)
    grade.feedback(root, ASSIGNMENT)
    return submitted, problems, scores(root)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    listener = Listener()
    before = tracked_hashes()
    attack = attacks(listener.port)
    honest = {s: ("solution", {}) for s in HONEST}
    root = copy_course(tmp_path_factory.mktemp("redteam"))
    course_before = tree_hashes(root)
    submissions = {**honest, "blank": ("blank", {}),
                   **{f"m-attack-{name}": (base, changes) for name, (base, changes, _) in attack.items()}}
    start = time.perf_counter()
    submitted, problems, got = grade_batch(root, submissions)
    print(f"red-team batch of {len(submissions)} graded in {time.perf_counter() - start:.0f} s")
    time.sleep(1)
    clean = copy_course(tmp_path_factory.mktemp("clean"))
    clean_submitted, _, clean_scores = grade_batch(clean, honest)
    listener.close()
    yield dict(root=root, attack=attack, problems=problems, scores=got, submitted=submitted, clean=clean,
               clean_submitted=clean_submitted, clean_scores=clean_scores, before=before, after=tracked_hashes(),
               course_before=course_before, connections=listener.connections, processes=marked_processes())
    for line in marked_processes():  # never leave one behind, even when the test failed
        subprocess.run(["kill", "-9", line.split()[0]])


def test_honest_students_get_full_marks_and_blank_zero(batches):
    assert [batches["scores"][s] for s in HONEST] == [MAX_SCORE, MAX_SCORE]
    assert batches["scores"]["blank"] == 0.0


@pytest.mark.parametrize("name", list(attacks(0)))
def test_cheat_scores_no_more_than_blank(batches, name):
    _, _, kind = batches["attack"][name]
    score = batches["scores"][f"m-attack-{name}"]
    if kind == "cheat":
        assert score <= batches["scores"]["blank"], f"{name} scored {score}: {batches['problems'][f'm-attack-{name}']}"
    else:  # harm and xss attacks are correct solutions: their own score is whatever their code earns
        assert score in (0.0, MAX_SCORE) or batches["problems"][f"m-attack-{name}"]


def test_attackers_leave_honest_students_exactly_as_without_them(batches):
    for s in HONEST:
        assert batches["scores"][s] == batches["clean_scores"][s]
        assert tree_hashes(batches["root"] / "submitted" / s) == batches["submitted"][s] == batches["clean_submitted"][s]
        pages = sorted((batches["root"] / "feedback" / s / ASSIGNMENT).glob("*.html"))
        assert [p.name for p in pages] == [f"{ASSIGNMENT}.html"], f"{s} has no feedback page"
        assert not [line for line in batches["problems"][s] if line], batches["problems"][s]


def test_repo_and_course_root_unchanged(batches):
    assert batches["after"] == batches["before"], "a tracked file of the repo changed during grading"
    root = batches["root"]
    now = {k: v for k, v in tree_hashes(root).items() if k.split("/")[0] in ("solutions", "nbgrader_config.py")}
    assert now == {k: v for k, v in batches["course_before"].items()}
    assert not list((root / "autograded").rglob(f"{MARK}-*")), "a link the kernel made outlived grading"


def test_no_hidden_test_text_in_any_feedback(batches):
    root = batches["root"]
    hidden = grade.hidden_lines(root, ASSIGNMENT) | {"BEGIN HIDDEN TESTS", "hidden=True"}
    encoded = {base64.b64encode(line.encode()).decode()[:24] for line in hidden if len(line) > 20}
    for page in (root / "feedback").rglob("*.html"):
        text = page.read_text()
        plain = grade.html_text(page)
        assert not [line for line in hidden if line in plain], f"{page} shows hidden test text"
        assert not [e for e in encoded if e in text], f"{page} holds base64-encoded hidden test text"


class ActiveContent(html.parser.HTMLParser):
    """Script elements, event-handler attributes and script URLs in a page, with the text near them."""

    def __init__(self):
        super().__init__()
        self.found, self.in_script = [], False

    def handle_starttag(self, tag, attrs):
        self.in_script = tag == "script"
        for key, value in attrs:
            if key.startswith("on") or "script:" in (value or "").replace(" ", "").lower():
                self.found.append(f"<{tag} {key}={value!r}>")

    def handle_data(self, data):
        if self.in_script and MARK in data:
            self.found.append(f"<script>{data[:80]}")

    def handle_endtag(self, tag):
        self.in_script = False


def test_feedback_pages_carry_no_student_script(batches):
    page = batches["root"] / "feedback" / "m-attack-xss" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    parser = ActiveContent()
    parser.feed(page.read_text())
    assert parser.found == [], f"student-controlled active content survived: {parser.found}"
    assert MARK in grade.html_text(page), "the markdown should still be shown, as text"


def test_nothing_left_running_and_no_network(batches):
    assert batches["processes"] == [], f"processes of the batch still alive: {batches['processes']}"
    assert batches["connections"] == 0, "a graded kernel reached the grader's loopback over TCP"


def test_collect_refuses_a_zip_that_names_a_classmate(tmp_path):
    import zipfile

    (tmp_path / "course").mkdir()
    root = copy_course(tmp_path / "course")
    grade.release(root, ASSIGNMENT)
    lms = tmp_path / "lms"
    lms.mkdir()
    blank = (root / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    with zipfile.ZipFile(lms / f"mallory_{ASSIGNMENT}.zip", "w") as z:
        z.writestr(f"victim_{ASSIGNMENT}.ipynb", blank)
        z.writestr(f"../../evil_{ASSIGNMENT}.ipynb", blank)
    (lms / f"alice_{ASSIGNMENT}.ipynb").write_bytes(blank)
    grade.collect(root, ASSIGNMENT, lms)
    students = sorted(p.parent.name for p in (root / "submitted").glob(f"*/{ASSIGNMENT}"))
    assert students == ["alice"], students
    refused = (root / "reports" / ASSIGNMENT / "collect_refused.txt").read_text()
    assert "victim" in refused and "evil" in refused
    assert not (tmp_path / f"evil_{ASSIGNMENT}.ipynb").exists()
    shutil.rmtree(root)


def test_autograde_refuses_without_a_sandbox_and_reports_no_sandbox(tmp_path, monkeypatch):
    """No working bwrap: autograde stops and says why; --no-sandbox grades and writes it into problems.csv and the
    summary."""
    from autograde_tests import sandbox

    monkeypatch.setenv("COURSE_GRADING_SANDBOX", "1")  # restored afterwards: --no-sandbox sets it to 0
    (tmp_path / "course").mkdir()
    root = copy_course(tmp_path / "course")
    grade.release(root, ASSIGNMENT)
    write_submission(root, ASSIGNMENT, "s1", quick(nbformat.read(root / "notebooks" / ASSIGNMENT /
                                                                f"{ASSIGNMENT}.ipynb", as_version=4)))
    monkeypatch.setattr(sandbox, "_status", "bubblewrap (bwrap) is not installed")
    with pytest.raises(SystemExit, match="no working grading sandbox: bubblewrap"):
        grade.autograde(root, ASSIGNMENT)
    problems = grade.autograde(root, ASSIGNMENT, sandbox=False)
    assert problems["s1"][0] == grade.NO_SANDBOX
    assert grade.NO_SANDBOX in (root / "reports" / ASSIGNMENT / "problems.csv").read_text()
    grade.summary(root, ASSIGNMENT)
    assert "WITHOUT the sandbox" in (root / "reports" / ASSIGNMENT / "summary.md").read_text()


def test_hidden_failure_names_the_property_and_hint_not_the_inputs():
    from autograde_tests import checks
    from autograde_tests.judge import hidden_message

    message = ("q_sample differs from the reference by 0.88 at t=37 (cosine schedule, T=500, x0 of shape (6, 1, 4, 4), "
               "torch.float64); the noise is scaled by sqrt(1 - alpha_bar_t), not (1 - alpha_bar_t)")
    shown = hidden_message(checks.check_q_sample, "q_sample", message)
    assert "equals course_lib.forward.add_noise" in shown and "not (1 - alpha_bar_t)" in shown
    assert "T=500" not in shown and "t=37" not in shown and "(6, 1, 4, 4)" not in shown


def test_links_in_a_submission_are_removed_before_grading(tmp_path):
    """A link handed in (nbgrader's exchange copies what a student submits) never reaches nbgrader, which copies and
    chmods the folder: it is removed first, and reported."""
    folder = tmp_path / "submitted" / "s1" / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{}")
    target = tmp_path / "gradebook.db"
    target.write_text("grades")
    (folder / "notes.db").symlink_to(target)
    problem = grade.sweep_links(folder)
    assert problem and "notes.db" in problem[0] and "removed before grading" in problem[0]
    assert sorted(p.name for p in folder.iterdir()) == [f"{ASSIGNMENT}.ipynb"] and target.read_text() == "grades"
    assert grade.sweep_links(folder) == []
