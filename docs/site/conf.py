"""Sphinx configuration of the course's web site; scripts/build_site.py is the way to build it (it stages the
notebooks, with outputs, and the pages under build/site-work/src, then runs Sphinx with this folder as -c).

Maths is converted to MathML while the site is built (docutils' LaTeX-to-MathML converter), and browsers draw
MathML themselves: the pages load nothing from the network, no MathJax, so the site works offline.
"""
import re
import xml.etree.ElementTree as ET

from docutils import nodes
from docutils.utils.math import latex2mathml

project = "Diffusion models, hands-on: from DDPM to DDIM"
author = "the course's authors"
copyright = "the course's authors; code MIT, material CC BY 4.0 (see the licence page)"

extensions = ["myst_nb"]  # MyST Markdown pages and .ipynb notebooks
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$ and $$...$$ as in the notebooks
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve to headings down to ###
nb_execution_mode = "off"  # build_site.py executes (or reuses executed copies); Sphinx only renders
nb_merge_streams = True  # one block per cell for stdout, one for stderr
nb_ipywidgets_js = {}  # widgets need a kernel; build_site.py keeps their static PNG, so load no widget JS

html_theme = "furo"  # its CSS, JS and search are bundled: nothing is loaded from a CDN
html_title = "Diffusion models, hands-on"
html_show_sourcelink = False  # the sources are the repo's notebooks
html_copy_source = False
html_math_renderer = "mathml"  # defined in setup() below
html_static_path = ["_static"]  # docs/site/_static
html_css_files = ["course.css"]  # the maths' fonts

# ---------------------------------------------------------------- maths as MathML

# What docutils' converter does not know, rewritten to what it does: sized delimiters become plain ones,
# \tfrac12 gets its braces, \dots is \ldots and \texttt is \mathtt.
_REWRITES = [
    (re.compile(r"\\(?:big|Big|bigg|Bigg)[lrm]?(?![A-Za-z])"), ""),
    (re.compile(r"\\([dt]?frac)\s*(\d)\s*(\d)"), r"\\\1{\2}{\3}"),
    (re.compile(r"\\dots(?![A-Za-z])"), r"\\ldots"),
    (re.compile(r"\\texttt(?![A-Za-z])"), r"\\mathtt"),
]
not_converted = []  # formulas shown as TeX source instead; build_site.py's log lists them


MATHML_NS = "http://www.w3.org/1998/Math/MathML"
ET.register_namespace("", MATHML_NS)


def _fix_accents(math):
    """docutils 0.22 writes an accented symbol with a subscript, \\bar\\alpha_t, as <munderover>(alpha, t, bar), which
    puts t under the alpha; make it <msub>(<mover>(alpha, bar), t), as TeX sets it. A real <munderover> (a sum,
    a limit) has an operator with movablelimits as its base and is left alone. Checked in Chromium: screenshots
    of notebook 02 show the bar of alpha-bar, the tilde of beta-tilde and the hat of x-hat, each with its index."""
    for element in math.iter():
        for i, child in enumerate(list(element)):
            if child.tag != "{%s}munderover" % MATHML_NS or len(child) != 3:
                continue
            base, under, over = list(child)
            if base.tag == "{%s}mo" % MATHML_NS and base.get("movablelimits"):
                continue
            accented = ET.Element("{%s}mover" % MATHML_NS)
            accented.extend([base, over])
            sub = ET.Element("{%s}msub" % MATHML_NS)
            sub.extend([accented, under])
            sub.tail = child.tail
            element.remove(child)
            element.insert(i, sub)
    for element in math.iter("{%s}mover" % MATHML_NS):
        element.attrib.pop("accent", None)  # as an accent, Chromium draws the bar into the alpha's top: unreadable
    return math


def mathml(tex, block):
    """MathML for the LaTeX formula `tex`, or None where the converter cannot read it."""
    for pattern, replacement in _REWRITES:
        tex = pattern.sub(replacement, tex)
    try:
        converted = latex2mathml.tex2mathml(tex, as_block=block).replace("&ApplyFunction;", "&#x2061;")  # for XML
        return ET.tostring(_fix_accents(ET.fromstring(converted)), encoding="unicode")
    except Exception:  # docutils raises SyntaxError or MathError on what it does not support
        return None


def _render(translator, node, block):
    tex = node.astext()
    converted = mathml(tex, block)
    if converted is None:
        not_converted.append(tex)
        converted = '<code class="tex">%s</code>' % translator.encode(tex)
    tag = "div" if block else "span"
    translator.body.append(translator.starttag(node, tag, "", CLASS="math"))
    translator.body.append(converted + "</%s>" % tag + ("\n" if block else ""))
    raise nodes.SkipNode


def visit_math(translator, node):
    _render(translator, node, block=False)


def visit_displaymath(translator, node):
    _render(translator, node, block=True)


def report(app, exception):
    if not_converted:
        print("[site] %d formulas are shown as TeX (docutils' MathML converter cannot read them): %s"
              % (len(not_converted), "; ".join(sorted(set(not_converted))[:10])))


def setup(app):
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    app.connect("build-finished", report)
