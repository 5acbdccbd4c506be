"""The set-up files agree: pyproject.toml and environment.yml list the same packages, the torch
that course.py and CI install fits pyproject's range, and the README's commands are the ones
.ci/run and course.py run."""
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
CONDA_ONLY = {"python", "pip"}  # the interpreter and installer, not project dependencies
CI_TORCH = Version("2.13.0")  # what CI's machines install (from local disk; anything else is a big download)


def pyproject_requirements(text, python_version="3.11"):
    """{name: SpecifierSet} of the runtime dependencies and the test extra that apply on python_version."""
    project = tomllib.loads(text)["project"]
    requirements = {}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"python_version": python_version}):
            requirements[canonicalize_name(req.name)] = req.specifier
    return requirements


def conda_requirements(text):
    """({name: SpecifierSet} of environment.yml's conda packages, its pip lines, its python version)."""
    requirements, pip_lines, python_version = {}, [], None
    for entry in yaml.safe_load(text)["dependencies"]:
        if isinstance(entry, dict):
            pip_lines += entry["pip"]
            continue
        match = re.fullmatch(r"(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*(.*)", entry.strip())
        name, spec = match.group(1).lower(), match.group(2).replace(" ", "")
        if name == "python":
            python_version = spec.lstrip("=")
        if name not in CONDA_ONLY:
            requirements[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec)
    return requirements, pip_lines, python_version


def readme_commands(text):
    """The `python3 course.py ...` lines of the README's code blocks."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith("python3 course.py")]


def ci_commands(text):
    """The lines of .ci/run, comments aside, that run course.py."""
    return [line.strip() for line in text.splitlines()
            if "course.py" in line and not line.strip().startswith("#")]


def test_pyproject_and_environment_yml_list_the_same_packages():
    conda, pip_lines, python_version = conda_requirements((ROOT / "environment.yml").read_text())
    pypi = pyproject_requirements((ROOT / "pyproject.toml").read_text(), python_version)
    assert set(conda) == set(pypi), (
        f"only in environment.yml: {sorted(set(conda) - set(pypi))}; "
        f"only in pyproject.toml: {sorted(set(pypi) - set(conda))}")
    differing = {name: (str(conda[name]), str(pypi[name])) for name in pypi if conda[name] != pypi[name]}
    assert not differing, f"version ranges differ (environment.yml, pyproject.toml): {differing}"
    assert pip_lines == ["-e .[test]"], "environment.yml should install the repo itself with pip"


def test_torch_range_admits_the_torch_ci_and_course_py_install():
    torch = pyproject_requirements((ROOT / "pyproject.toml").read_text())["torch"]
    assert CI_TORCH in torch, f"pyproject's torch{torch} rejects {CI_TORCH}: pip would download another torch"
    default = re.search(r'^DEFAULT_TORCH = "(.+)"$', (ROOT / "course.py").read_text(), flags=re.M)
    pinned = Requirement(default.group(1)).specifier
    assert len(pinned) == 1 and next(iter(pinned)).operator == "==", f"course.py should pin torch exactly: {pinned}"
    assert Version(next(iter(pinned)).version) in torch, f"course.py's {default.group(1)} is outside torch{torch}"


def test_readme_commands_are_the_ones_ci_and_course_py_run():
    readme = readme_commands((ROOT / "README.md").read_text())
    assert sorted(set(readme)) == ["python3 course.py lab", "python3 course.py test"], readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert ci_commands(ci) == ["python3 course.py test"], "CI should run exactly the README's test command"
    usage = subprocess.run([sys.executable, str(ROOT / "course.py"), "--help"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "course.py lab" in usage.stdout and "course.py test" in usage.stdout


def test_the_checks_catch_a_mismatch():
    """The helpers above see a difference when there is one (so the tests can fail)."""
    readme = (ROOT / "README.md").read_text().replace("python3 course.py test", "python3 course.py check")
    assert "python3 course.py test" not in readme_commands(readme)
    conda, _, _ = conda_requirements("dependencies:\n  - python=3.11\n  - pytorch>=2.14\n  - numpy\n")
    assert set(conda) == {"torch", "numpy"} and CI_TORCH not in conda["torch"]
    assert ci_commands("# python3 course.py test\npython3 course.py lab\n") == ["python3 course.py lab"]
