"""Batch throughput of the autograder: submissions per minute, serial and with --jobs 2 (separate gradebooks).

A benchmark, not a test: it prints measured numbers. It builds a class of N Assignment 1 submissions from
solutions/assignment1 (the whole solution, and the mistakes of autograde_tests/test_assignment1_pipeline.py in
turn; full notebooks, training cell included, unless --quick), then grades the same class with
`scripts/grade.py autograde` once per --jobs value and sandbox setting (the bubblewrap sandbox, and --no-sandbox
for comparison: what the sandbox costs per submission), each time in a fresh temporary course root.

    python benchmarks/bench_grading.py --students 8 --jobs 1 2 --sandbox on off
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autograde_tests.faults import load_grade_script, quick, write_submission  # noqa: E402
from autograde_tests.test_assignment1_pipeline import MISTAKES, with_mistake  # noqa: E402

grade = load_grade_script()


def make_class(root, n, trim):
    """n submissions: the solution, then each mistake in turn (their notebooks take the same time to run)."""
    solution = nbformat.read(root / "solutions" / "assignment1" / "assignment1.ipynb", as_version=4)
    variants = [solution] + [with_mistake(solution, old, new) for old, new, _ in MISTAKES.values()]
    for i in range(n):
        nb = variants[i % len(variants)]
        write_submission(root, "assignment1", f"student{i:03d}", quick(nb) if trim else nb)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="drop the ungraded training cells")
    parser.add_argument("--sandbox", nargs="+", default=["on", "off"], choices=["on", "off"])
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} before the run")
    for jobs in args.jobs:
        for sandbox in args.sandbox:
            root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
            shutil.copy(REPO / "nbgrader_config.py", root)
            shutil.copytree(REPO / "solutions", root / "solutions")
            grade.release(root, "assignment1")
            make_class(root, args.students, args.quick)
            start = time.perf_counter()
            grade.autograde(root, "assignment1", jobs=jobs, sandbox=sandbox == "on")
            seconds = time.perf_counter() - start
            print(f"jobs={jobs}, sandbox {sandbox}: {args.students} {'quick' if args.quick else 'full'} submissions in "
                  f"{seconds:.0f} s = {60 * args.students / seconds:.1f} submissions/minute ({seconds / args.students:.1f}"
                  f" s each); load average {os.getloadavg()[0]:.1f}")
            shutil.rmtree(root, ignore_errors=True)

if __name__ == "__main__":
    main()
