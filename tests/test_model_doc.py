"""docs/model.md's section on what 500 samples can show: every number recomputed from results/solvers/table.csv."""
import math
from pathlib import Path

from scipy.stats import binom

from conftest import read_csv
from course_lib.metrics import newcombe_interval, wilson_interval

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.95  # issue 13's target (a): the confident share of DDPM-1000 samples


def section():
    text = (ROOT / "docs" / "model.md").read_text()
    start = text.index("## What 500 samples can and cannot show")
    return " ".join(text[start:text.index("\n## ", start + 1)].split())  # one line: the prose wraps anywhere


def test_the_section_states_what_the_committed_results_give():
    rows = {r["sampler"]: r for r in read_csv(ROOT / "results" / "solvers" / "table.csv")}
    real, ddpm = rows["real_test"], rows["ddpm"]
    n = int(ddpm["samples"])
    assert int(real["samples"]) == n == 500, "the section is written for N = 500"
    words = section()

    k_min = next(k for k in range(n + 1) if wilson_interval(k, n)[0] >= TARGET)
    assert f"only when {k_min} of the {n} samples, {100 * k_min / n:.1f} %" in words
    assert abs(float(real["confident"]) - k_min / n) < 1e-9, "the page says the real digits score exactly this share"
    chance = binom.sf(math.ceil(TARGET * n) - 1, n, TARGET)  # P(X >= 95 % of n) for X ~ Binomial(n, 0.95)
    assert f"in only {round(100 * chance)} % of runs" in words, chance

    fid = [float(real[c]) for c in ("fid", "fid_low", "fid_high")]
    assert f"{fid[0]:.2f} [{fid[1]:.2f}, {fid[2]:.2f}]" in words
    assert f"Twice the floor, {2 * fid[0]:.2f}, lies inside the floor's own interval" in words
    assert fid[1] <= 2 * fid[0] <= fid[2]
    kid = [float(ddpm[c]) for c in ("kid", "kid_low", "kid_high")]
    assert f"{kid[0]:.4f} [{kid[1]:.4f}, {kid[2]:.4f}]" in words and kid[1] <= 0 <= kid[2]

    share = [100 * float(ddpm[c]) for c in ("confident", "confident_low", "confident_high")]
    assert f"{share[0]:.1f} % [{share[1]:.1f}, {share[2]:.1f}]" in words and share[1] <= 100 * TARGET <= share[2]
    k_real, k_ddpm = round(float(real["confident"]) * n), round(float(ddpm["confident"]) * n)
    low, high = newcombe_interval(k_ddpm, n, k_real, n)
    gap = 100 * (k_ddpm - k_real) / n
    assert f"minus the real digits' share, {gap:.1f} points [{100 * low:.1f}, {100 * high:+.1f}], not resolved" in words
    assert low <= 0 <= high
    assert f"({float(ddpm['fid']):.2f}, {float(ddpm['fid']) / fid[0]:.1f} times the floor)" in words
    per_sample = float(ddpm["seconds_per_sample"])  # DDPM-1000: T calls per sample, measured by the run
    assert f"about {2000 * per_sample / 3600:.1f} hours of the machine that made these numbers at {round(per_sample)} ms per image-call" in words
