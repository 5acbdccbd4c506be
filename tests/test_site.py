"""The course's web site builds (scripts/build_site.py: Sphinx + MyST-NB), and every internal link, anchor and
image in it resolves; every lecture notebook, the syllabus, the troubleshooting page and the licence are in it.

The site is built once, into a temporary folder, with --no-execute: notebooks that have an executed copy in
build/executed/ of the same cells (tests/test_notebooks.py or an earlier site build leaves them there) are shown
with their outputs, the others without, so the build takes seconds, not the minutes that executing takes.
Sphinx's warnings fail the build. The link check reads the HTML with the standard library's html.parser; no
network is used, and the pages may load nothing from outside (the maths is MathML, converted while building).
"""
import importlib.util
import os
import re
import subprocess
import sys
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SITE = REPO / "scripts" / "build_site.py"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = {"docs/syllabus.html": "Syllabus", "docs/troubleshooting.html": "Troubleshooting",
         "docs/model.html": "TheshippedMNISTmodel", "license.html": "Licence"}
ALLOWED_REMOTE = ()  # URL prefixes the pages may load from outside: none (maths is MathML, drawn by the browser)
BUILD_TIMEOUT_S = 300
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 60)  # whichever test comes first builds the site


# ---------------------------------------------------------------- a small HTML link checker

class PageParser(HTMLParser):
    """Collects a page's ids (anchor targets), links (a, link), resources (img, script, source) and h1 text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.resources, self.h1, self._in_h1 = set(), [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id",) + (("name",) if tag == "a" else ()):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag in ("a", "link") and attrs.get("href") is not None:
            self.links.append(attrs["href"])
        if tag in ("img", "script", "source", "iframe") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "h1" and not self.h1:
            self._in_h1 = True

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1.append(data)


def parse(path):
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def is_remote(url):
    return urllib.parse.urlsplit(url).scheme in ("http", "https", "mailto", "data", "javascript", "ftp") or \
        url.startswith("//")


def check_site(site):
    """A list of problems, one line each: internal links to missing files or anchors, missing images, scripts
    or stylesheets, and resources loaded from outside (other than ALLOWED_REMOTE)."""
    site = Path(site)
    pages = {path: parse(path) for path in site.rglob("*.html")}
    problems = []
    for page, parsed in pages.items():
        name = page.relative_to(site).as_posix()
        for url, is_resource in [(u, False) for u in parsed.links] + [(u, True) for u in parsed.resources]:
            if is_remote(url):
                if is_resource and not url.startswith(ALLOWED_REMOTE):
                    problems.append(f"{name}: loads {url} from outside the site")
                continue
            parts = urllib.parse.urlsplit(url)
            path = urllib.parse.unquote(parts.path)
            target = page if not path else (page.parent / path).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{name}: {url} -> no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    problems.append(f"{name}: {url} -> no anchor #{parts.fragment} in {target.relative_to(site)}")
    return problems


# ---------------------------------------------------------------- the site, built once

def missing_or_skip(reason):
    """Skip with `reason`, or fail under CI=true, where the site must be built."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the site must be built in CI; they are in pyproject's test extra)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the site's folder, the build's log)."""
    for module in ("sphinx", "myst_nb", "furo"):
        if importlib.util.find_spec(module) is None:
            missing_or_skip(f"{module} is not installed: pip install -e .[test]")
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(BUILD_SITE), "--out", str(out), "--no-execute"],
                            cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    log = result.stdout + result.stderr
    print(f"\n[site] built in {time.monotonic() - start:.0f} s\n{log}")
    assert result.returncode == 0, f"scripts/build_site.py failed (Sphinx warnings count as errors):\n{log}"
    return out, log


@pytest.fixture(scope="module")
def site(built):
    return built[0]


def test_every_internal_link_anchor_and_image_resolves(site):
    problems = check_site(site)
    assert not problems, f"{len(problems)} broken links or outside resources:\n" + "\n".join(problems)


def heading(nb):
    """The notebook's title (its first # heading), up to the first maths, which renders differently."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].split("$")[0].strip()
    return None


def letters(text):
    """Letters and digits only: Sphinx turns ' into a typographic quote and appends a link sign to headings."""
    return re.sub(r"\W", "", text)


def test_every_lecture_notebook_is_in_the_site(site):
    index = parse(site / "index.html")
    linked = {urllib.parse.urlsplit(href).path for href in index.links}
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        page = site / "notebooks" / (path.stem + ".html")
        assert page.is_file(), f"{path.name} has no page in the site"
        assert f"notebooks/{page.name}" in linked, f"the front page does not link to {path.name}"
        nb = nbformat.read(path, as_version=4)
        title = heading(nb)
        assert title, f"{path.name} has no '# ' title"
        shown = "".join(parse(page).h1)
        assert letters(shown).startswith(letters(title)), f"{page.name}: title {shown!r} is not {title!r}"
        html = page.read_text(encoding="utf-8")
        code_cells = [c for c in nb.cells if c.cell_type == "code"
                      and not {"remove-cell", "remove_cell"} & set(c.metadata.get("tags", []))]
        assert html.count('class="cell docutils container"') == len(code_cells), \
            f"{page.name} does not show each of the notebook's {len(code_cells)} code cells"


def test_syllabus_troubleshooting_and_licence_are_in_the_site(site):
    linked = {urllib.parse.urlsplit(href).path for href in parse(site / "index.html").links}
    for name, title in PAGES.items():
        assert (site / name).is_file(), f"{name} missing from the site"
        assert name in linked, f"the front page does not link to {name}"
        assert letters("".join(parse(site / name).h1)).startswith(title)
    # every lecture has its row in the syllabus (the sidebar links every page, so read the source, not the HTML)
    syllabus = (REPO / "docs" / "syllabus.md").read_text(encoding="utf-8")
    missing = [path.name for path in NOTEBOOKS if f"](../notebooks/{path.name})" not in syllabus]
    assert not missing, f"docs/syllabus.md does not link {missing}: give each lecture its row, goals and time there"


def test_every_formula_is_mathml(built):
    """docs/site/conf.py converts each formula to MathML; one it cannot read would show as TeX source."""
    site, log = built
    assert "formulas are shown as TeX" not in log, (
        "some formulas could not be converted to MathML (see the log below); write them with commands that "
        "docutils' converter knows, or add a rewrite to _REWRITES in docs/site/conf.py\n" + log)
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert '<code class="tex">' not in html, f"{page.relative_to(site)} shows a formula as TeX source"
    pages = [site / "notebooks" / (path.stem + ".html") for path in NOTEBOOKS]
    assert sum(page.read_text(encoding="utf-8").count("<math") for page in pages) > 100


def test_the_link_checker_finds_broken_links(tmp_path):
    """check_site reports a missing page, a missing anchor, a missing image and an outside script."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "page.html").write_text('<h1 id="top">Page</h1><img src="../pic.png">')
    (tmp_path / "pic.png").write_bytes(b"png")
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#top">ok</a> <a href="#here" id="here">ok</a> <a href="https://example.org/">ok</a>'
        '<a href="sub/gone.html">x</a> <a href="sub/page.html#nowhere">x</a> <img src="missing.png">'
        '<script src="https://cdn.example.org/lib.js"></script>')
    problems = check_site(tmp_path)
    assert len(problems) == 4, problems
    for needle in ("sub/gone.html", "#nowhere", "missing.png", "cdn.example.org"):
        assert any(needle in p for p in problems), (needle, problems)


def test_executed_copies_are_reused_only_when_current(tmp_path):
    """build_site.py takes a notebook's executed copy when it has the same cells, ran with figures as outputs and
    without errors, and is newer than the notebook and course_lib; otherwise it runs (here: skips) the notebook."""
    sys.path.insert(0, str(BUILD_SITE.parent))
    try:
        import build_site
    finally:
        sys.path.remove(str(BUILD_SITE.parent))
    source = nbformat.read(NOTEBOOKS[0], as_version=4)
    executed = nbformat.read(NOTEBOOKS[0], as_version=4)
    for n, cell in enumerate(c for c in executed.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    copy_path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(executed, copy_path)
    assert build_site.usable_copy(source, copy_path, 0) is None  # not marked as run with the inline backend
    executed.metadata["course"] = {"mpl_backend": build_site.INLINE_BACKEND}
    nbformat.write(executed, copy_path)
    now = copy_path.stat().st_mtime
    assert build_site.usable_copy(source, copy_path, now - 1) is not None
    assert build_site.usable_copy(source, copy_path, now + 1) is None  # older than the notebook or course_lib
    edited = nbformat.read(NOTEBOOKS[0], as_version=4)
    edited.cells[-1].source += "\n# edited"
    assert build_site.usable_copy(edited, copy_path, now - 1) is None  # the cells changed since
    first_code = next(c for c in executed.cells if c.cell_type == "code")
    first_code.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="no", traceback=[])]
    nbformat.write(executed, copy_path)
    assert build_site.usable_copy(source, copy_path, 0) is None  # a copy with an error is no use
    # widgets keep their static PNG; progress bars (text only) go
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "interactive(...)"}
    first_code.outputs = [nbformat.v4.new_output("display_data", data={**widget, "image/png": "iVBO"}),
                          nbformat.v4.new_output("display_data", data=dict(widget))]
    executed.metadata["widgets"] = {"state": {}}
    web = build_site.for_the_web(executed)
    web_code = next(c for c in web.cells if c.cell_type == "code")
    assert [sorted(o["data"]) for o in web_code.outputs] == [["image/png", "text/plain"]]
    assert "widgets" not in web.metadata and "widgets" in executed.metadata  # a copy; the original is kept
