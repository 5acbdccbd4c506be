"""Grading helpers for the nbgrader assignments (`checks.py`) and tests of the grading pipeline."""
