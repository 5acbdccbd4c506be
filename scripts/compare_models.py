"""Two models on the same samples: paired differences between two `evaluate_solvers.py` runs.

    git worktree add /tmp/before 2a53ec9        # a checkout whose results/solvers/ holds the previous model's run
    python scripts/compare_models.py /tmp/before/results/solvers results/solvers

Both folders must come from `scripts/evaluate_solvers.py` with the same classifier, N and seed, so that row i of a
setting was sampled from the same x_T (and, for DDPM, the same noise) in both. For every sampler setting in both, it
prints each model's confident share (the classifier's largest p(y | x) >= 0.9) and FID, and the difference b - a with
a 95 % paired bootstrap interval: one set of resampled rows serves both models, so the x_T they share cancels. It also
counts the samples that only one model's sample of that x_T is read confidently. This is how docs/model.md compares
the shipped model with the one before it; it reads stored features only, so it takes seconds.
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from course_lib.classifier import load_classifier, reference_stats  # noqa: E402
from course_lib.metrics import bootstrap_fid_kid, percentile_interval, reference_features, resample_counts  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from evaluate_solvers import CONFIDENCE, confident_rows  # noqa: E402  the same "confident" as results/solvers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="results folder of the first model (evaluate_solvers.py --out)")
    p.add_argument("b", type=Path, help="results folder of the second model, same classifier, N and seed")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default 0)")
    return p.parse_args(argv)


def stored_features(folder):
    """{setting without the model's hash: ((N, D) features, model sha256)} from <folder>/features/*.pt."""
    paths = sorted((folder / "features").glob("*.pt")) if (folder / "features").is_dir() else []
    if not paths:
        raise SystemExit(f"{folder} holds no features/: give a folder written by scripts/evaluate_solvers.py")
    out = {}
    for path in paths:
        data = torch.load(path, weights_only=True)
        fields = data["key"].split("|")
        model = next(f for f in fields if f.startswith("model="))
        if "kind=real_test" not in fields:  # the real digits are the same in both runs
            out["|".join(f for f in fields if f != model)] = (data["features"].double(), model[len("model="):])
    return out


def compare(a, b, classifier, stats_ref, features_ref, num_resamples=2000, seed=0):
    """Paired differences b - a for every setting in both folders: a list of dicts, one per setting. Every setting
    uses the same resampled rows (drawn from `seed`), so a setting's interval does not depend on which others exist."""
    features_a, features_b = stored_features(a), stored_features(b)
    common = sorted(set(features_a) & set(features_b), key=lambda k: (len(k), k))
    if not common:
        raise SystemExit(f"{a} and {b} share no setting: they must use the same classifier, N and seed "
                         f"(evaluate_solvers.py --samples/--seed)")
    rows = []
    for setting in common:
        (fa, sha_a), (fb, sha_b) = features_a[setting], features_b[setting]
        ca, cb = (confident_rows(classifier, f).double() for f in (fa, fb))  # (N,) 1 where read confidently
        counts = resample_counts(len(fa), num_resamples, torch.Generator().manual_seed(seed))  # (B + 1, N)
        boot = bootstrap_fid_kid({"a": fa, "b": fb}, *stats_ref, features_ref, counts=counts)
        fid_diff = boot["b"]["fid"] - boot["a"]["fid"]
        share_diff = counts[1:] @ (cb - ca) / counts[1:].sum(1)
        rows.append({"setting": setting, "model_a": sha_a, "model_b": sha_b, "n": len(fa),
                     "confident_a": float(ca.mean()), "confident_b": float(cb.mean()),
                     "confident_diff": float((cb - ca).mean()),
                     "confident_diff_ci": percentile_interval(share_diff, confidence=CONFIDENCE),  # a mean: no bias
                     "only_a": int(((ca == 1) & (cb == 0)).sum()), "only_b": int(((cb == 1) & (ca == 0)).sum()),
                     "fid_a": boot["a"]["fid_point"], "fid_b": boot["b"]["fid_point"],
                     "fid_diff": boot["b"]["fid_point"] - boot["a"]["fid_point"],
                     "fid_diff_ci": percentile_interval(fid_diff, boot["b"]["fid_point"] - boot["a"]["fid_point"],
                                                        CONFIDENCE)})
    return rows


def describe(setting):
    fields = dict(f.split("=", 1) for f in setting.split("|"))
    return f"{fields['kind']}, {fields['calls']} calls"


def main(argv=None):
    args = parse_args(argv)
    classifier = load_classifier(device="cpu")
    rows = compare(args.a, args.b, classifier, reference_stats(), reference_features(classifier), args.resamples,
                   args.seed)
    print(f"a = {args.a} (model {rows[0]['model_a'][:12]}), b = {args.b} (model {rows[0]['model_b'][:12]}); "
          f"{rows[0]['n']} paired samples per setting, b - a with {CONFIDENCE:.0%} paired bootstrap intervals")
    print(f"{'setting':<22}{'confident a':>12}{'b':>8}{'b - a (points)':>26}{'only a':>8}{'only b':>8}"
          f"{'FID a':>8}{'b':>7}{'b - a':>24}")
    for r in rows:
        low, high = r["confident_diff_ci"]
        fid_low, fid_high = r["fid_diff_ci"]
        print(f"{describe(r['setting']):<22}{r['confident_a']:>12.1%}{r['confident_b']:>8.1%}"
              f"{100 * r['confident_diff']:>+10.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
              f"{r['only_a']:>8}{r['only_b']:>8}{r['fid_a']:>8.2f}{r['fid_b']:>7.2f}"
              f"{r['fid_diff']:>+9.2f} [{fid_low:+.2f}, {fid_high:+.2f}]")
    return rows


if __name__ == "__main__":
    main()
