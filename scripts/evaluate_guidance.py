"""The guidance trade-off, measured: class accuracy against FID, KID and diversity as the guidance weight w grows.

    python scripts/evaluate_guidance.py       # the full run, into results/guidance/
    python scripts/evaluate_guidance.py --samples 20 --weights 0,3 --out /tmp/guidance      # a smoke test

For every w in --weights, N samples (--samples, a multiple of 10) from the class-conditional model
(course_lib/data/mnist_cfg_unet28.pt) with classifier-free guidance (`course_lib.guidance.guided_model`) and
deterministic DDIM (eta = 0, --steps steps, trailing timesteps). Row i asks for digit i % 10 and starts from the
same x_T for every w, so the settings are paired. w = 0 is the unconditional model, w = 1 the conditional one.
Each sample is scored with the course classifier: **accuracy** (its argmax is the digit asked for), **FID and KID**
against the real train split (the requests are class-balanced, like the train split), and **within-class spread**
(the mean squared distance of a sample's features to the mean of the samples read as the same digit, averaged over
the ten digits, as a share of the same for real held-out digits: below 1 means less varied than real digits). Intervals: one paired bootstrap of the
N rows, 95 %, shared by every metric and setting (accuracy alone gets Wilson's interval for a proportion); an ordering
is reported only where its paired interval excludes 0.

Cost: 500 x 25 model calls per w, twice that for w not in {0, 1} (each guided call runs the batch twice): about
125,000 image-calls for the default weights, 5 to 10 minutes on one thread of a CPU. Resumable: each finished
setting is kept in <out>/cache.json (keyed by the sha256 of the model and of the classifier, w, the sampler, N and
the seed) with its features in <out>/features/; a re-run skips what is done and rewrites table.csv, README.md,
tradeoff.png and samples.png from the cache.
"""
import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # course_lib, also where the repo is not pip-installed
from course_lib.classifier import embed, load_classifier, reference_stats  # noqa: E402
from course_lib.ddim import ddim_sample, make_timesteps  # noqa: E402
from course_lib.device import set_cpu_threads  # noqa: E402
from course_lib.guidance import guided_model  # noqa: E402
from course_lib.metrics import (bootstrap_fid_kid, percentile_interval, reference_features,  # noqa: E402
                                resample_counts, wilson_interval)
from course_lib.mnist import load_mnist  # noqa: E402
from course_lib.plots import show_images  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_solvers import add_common_arguments  # noqa: E402  (the same options)
from evaluate_tables import (eval_device, load_snapshot, machine, run_jobs, sha256_of, stem,  # noqa: E402
                             write_atomic)  # the cache, its chunks, the device

MODEL_PATH = ROOT / "course_lib" / "data" / "mnist_cfg_unet28.pt"
OUT = ROOT / "results" / "guidance"
WEIGHTS = "0,1,2,3,5,8"
CHUNK = 50  # samples per sampler call
RESAMPLES, CONFIDENCE = 1000, 0.95


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500, help="N samples per w, a multiple of 10 (default 500)")
    parser.add_argument("--weights", default=WEIGHTS, help=f"comma-separated guidance weights w (default {WEIGHTS})")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps S (default 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T")
    add_common_arguments(parser, MODEL_PATH, OUT)
    args = parser.parse_args(argv)
    try:
        args.weights = sorted({float(v) for v in str(args.weights).split(",") if v.strip()})
    except ValueError:
        parser.error(f"--weights {args.weights!r}: give numbers >= 0, e.g. 0,1,3")
    if not args.weights or min(args.weights) < 0:
        parser.error(f"--weights {args.weights}: give guidance weights >= 0 (0: unconditional, 1: conditional)")
    if args.samples < 20 or args.samples % 10:
        parser.error("--samples must be a multiple of 10 and >= 20 (the same number of each digit)")
    if args.resamples < 10:
        parser.error("--resamples must be >= 10")
    return args


def make_jobs(args, model_sha, classifier_sha):
    """Every setting with a unique cache key and its cost in image-calls; cheapest first."""
    jobs = [{"kind": "real_test", "w": None}]
    jobs += [{"kind": "cfg_ddim", "w": w, "steps": args.steps, "spacing": "trailing"} for w in args.weights]
    common = f"model={model_sha}|classifier={classifier_sha}|N={args.samples}|seed={args.seed}"
    for job in jobs:
        job["key"] = common + "|" + "|".join(f"{k}={v}" for k, v in job.items())
        passes = 0 if job["kind"] == "real_test" else (1 if job["w"] in (0.0, 1.0) else 2)
        job["cost"] = args.samples * job.get("steps", 0) * passes
    return sorted(jobs, key=lambda job: job["cost"])


def run_job(job, ctx, bar):
    """Sample (or load) one setting's N images chunk by chunk; keep their features, logits and requested labels."""
    start = time.time()
    if job["kind"] == "real_test":  # the held-out digits, with their true labels: the floor of every metric
        images, labels = ctx["real_test"]
        features, logits = embed(images, ctx["classifier"])
        wall = 0.0
    else:
        partial_dir = ctx["out"] / "partial"
        features, logits, wall = [], [], 0.0
        timesteps = make_timesteps(ctx["schedule"].T, job["steps"], job["spacing"])
        for c, first in enumerate(range(0, ctx["args"].samples, CHUNK)):
            path = partial_dir / f"{stem(job)}.chunk{c}.pt"
            x_T, y = ctx["x_T"][first:first + CHUNK], ctx["y"][first:first + CHUNK]
            if path.exists():
                part = torch.load(path, weights_only=True)
            else:
                chunk_start = time.time()
                with torch.no_grad():
                    model = guided_model(ctx["model"], y.to(ctx["device"]), job["w"])
                    x0 = ddim_sample(model, x_T.to(ctx["device"]), ctx["schedule"], timesteps, eta=0.0,
                                     progress=False).float().cpu().clamp(-1, 1)
                f, l = embed(x0, ctx["classifier"])
                part = {"features": f, "logits": l, "wall_time_s": time.time() - chunk_start,
                        "preview": x0[:10].clone() if c == 0 else None}
                partial_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda tmp: torch.save(part, tmp))
            if c == 0:  # its first ten rows (digits 0 to 9) for samples.png
                preview = ctx["out"] / "features" / f"{stem(job)}.preview.pt"
                preview.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(preview, lambda tmp: torch.save(part["preview"], tmp))
            bar.update(len(x_T) * job["cost"] // ctx["args"].samples)
            features.append(part["features"])
            logits.append(part["logits"])
            wall += float(part["wall_time_s"])
        features, logits, labels = torch.cat(features), torch.cat(logits), ctx["y"]
    path = ctx["out"] / "features" / f"{stem(job)}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save({"key": job["key"], "features": features, "logits": logits,
                                               "labels": labels}, tmp))
    return {"accuracy": float((logits.argmax(1) == labels).float().mean()), "n": int(len(labels)),
            "wall_time_s": wall, "seconds_per_sample": wall / len(labels), "elapsed_s": time.time() - start}


def within_class_spread(counts, features, labels):
    """Mean over classes of E||f - E f||^2 within the class, for each row of counts (R, N) -> (R,), float64.

    counts[r, i]: how often row i is drawn in resample r. A class drawn fewer than twice in a resample is left out
    of that resample's mean (it has no spread); at N = 500 (50 per class) that does not happen.
    """
    f = features.double()
    spreads = []
    for c in labels.unique():
        weights = counts * (labels == c).double()  # (R, N)
        n_c = weights.sum(1)  # (R,)
        mean = weights @ f / n_c.clamp(min=1)[:, None]  # (R, D)
        second = weights @ f.square().sum(1) / n_c.clamp(min=1)  # (R,)
        spread = second - mean.square().sum(1)
        spreads.append(torch.where(n_c >= 2, spread, torch.nan))
    return torch.stack(spreads).nanmean(0)


def measure(done, ctx):
    """Point estimates and paired bootstrap intervals of every metric; differences between neighbouring w."""
    stored = {}
    for job, _ in done:
        path = ctx["out"] / "features" / f"{stem(job)}.pt"
        data = torch.load(path, weights_only=True) if path.exists() else None
        if data is None or data["key"] != job["key"]:
            raise SystemExit(f"[guidance] features of {job['kind']} w={job['w']} are missing; delete cache.json "
                             "to recompute")
        stored[job["key"]] = data
    args = ctx["args"]
    N = args.samples
    counts = resample_counts(N, args.resamples, torch.Generator().manual_seed(args.seed + 1))  # one for every metric
    boot = bootstrap_fid_kid({k: d["features"] for k, d in stored.items()}, *ctx["stats_ref"], ctx["features_ref"],
                             counts=counts)
    real_key = next(job["key"] for job, _ in done if job["kind"] == "real_test")
    # spread is grouped by the digit the classifier reads (at w = 0 the requested label means nothing)
    real = stored[real_key]
    real_spread = float(within_class_spread(counts[:1], real["features"], real["logits"].argmax(1))[0])
    values = {}
    for key, d in stored.items():
        correct = (d["logits"].argmax(1) == d["labels"]).double()
        accuracy = counts @ correct / N  # (R + 1,)
        spread = within_class_spread(counts, d["features"], d["logits"].argmax(1)) / real_spread
        values[key] = {"accuracy": (accuracy[1:], float(accuracy[0])), "spread": (spread[1:], float(spread[0])),
                       "fid": (boot[key]["fid"], boot[key]["fid_point"]),
                       "kid": (boot[key]["kid"], boot[key]["kid_point"])}
    # FID, KID and spread are biased in a resample (repeated rows look less varied): shift by the bootstrap bias.
    # Accuracy is a proportion: Wilson's interval, which stays honest at 500 of 500 (a bootstrap would say [1, 1])
    table = {key: {m: (point, *(wilson_interval(round(point * N), N) if m == "accuracy" else
                                percentile_interval(b, point, CONFIDENCE)))
                   for m, (b, point) in v.items()} for key, v in values.items()}
    guided = [job for job, _ in done if job["kind"] == "cfg_ddim"]
    diffs = []
    for a, b in zip(guided, guided[1:]):  # neighbouring weights, lower w first
        row = {"a": a["w"], "b": b["w"]}
        for m in ("accuracy", "fid", "spread"):
            (A, pa), (B, pb) = values[a["key"]][m], values[b["key"]][m]
            low, high = percentile_interval(B - A, None if m == "accuracy" else pb - pa, CONFIDENCE)
            row[m] = (pb - pa, low, high)
        diffs.append(row)
    return table, diffs


def describe(job):
    return "real held-out digits" if job["kind"] == "real_test" else f"w = {job['w']:g}"


def fmt(entry, digits=2, scale=1.0):
    point, low, high = (scale * v for v in entry)
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def findings(done, table, diffs):
    """Sentences from the numbers; a rise or fall only where the paired interval excludes 0."""
    lines = []
    by_w = {job["w"]: table[job["key"]] for job, _ in done if job["kind"] == "cfg_ddim"}
    real = next(table[job["key"]] for job, _ in done if job["kind"] == "real_test")
    lines.append(f"- Real held-out digits: accuracy {fmt(real['accuracy'], 3)}, FID {fmt(real['fid'])} (the floor "
                 "at this N).")
    for d in diffs:
        parts = []
        for m, name in (("accuracy", "accuracy"), ("fid", "FID"), ("spread", "within-class spread")):
            point, low, high = d[m]
            word = "rises" if low > 0 else "falls" if high < 0 else "is not resolved"
            digits = 3 if m != "fid" else 2
            parts.append(f"{name} {word} ({point:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}])")
        lines.append(f"- From w = {d['a']:g} to w = {d['b']:g}: " + "; ".join(parts) + ".")
    if by_w:
        best_fid = min(by_w, key=lambda w: by_w[w]["fid"][0])
        best_acc = max(by_w, key=lambda w: by_w[w]["accuracy"][0])
        lines.append(f"- Lowest FID at w = {best_fid:g} ({fmt(by_w[best_fid]['fid'])}); highest accuracy at "
                     f"w = {best_acc:g} ({fmt(by_w[best_acc]['accuracy'], 3)}). Point estimates: check the steps "
                     "above for which differences are resolved.")
    return lines


def write_outputs(out, done, table, diffs, args, model_info, ctx, run_time):
    header = ["setting", "w", "steps", "samples", "accuracy", "accuracy_low", "accuracy_high", "fid", "fid_low",
              "fid_high", "kid", "kid_low", "kid_high", "spread", "spread_low", "spread_high", "wall_time_s",
              "seed", "model_steps", "model_sha256"]
    lines = [",".join(header)]
    rows = ["| setting | accuracy [95 %] | FID [95 %] | KID x 1000 [95 %] | within-class spread [95 %] "
            "| s per sample |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for job, r in done:
        t = table[job["key"]]
        cells = [job["kind"], "" if job["w"] is None else f"{job['w']:g}", job.get("steps", ""), r["n"]]
        for m, digits in (("accuracy", 4), ("fid", 4), ("kid", 6), ("spread", 4)):
            cells += [f"{v:.{digits}f}" for v in t[m]]
        cells += [f"{r['wall_time_s']:.1f}", args.seed, model_info["steps"], model_info["sha256"]]
        lines.append(",".join(str(c) for c in cells))
        seconds = "" if job["kind"] == "real_test" else f"{r['seconds_per_sample']:.3f}"
        rows.append(f"| {describe(job)} | {fmt(t['accuracy'], 3)} | {fmt(t['fid'])} | {fmt(t['kid'], 2, 1000)} "
                    f"| {fmt(t['spread'])} | {seconds} |")
    (out / "table.csv").write_text("\n".join(lines) + "\n")

    guided = [(job, table[job["key"]]) for job, _ in done if job["kind"] == "cfg_ddim"]
    real = next(table[job["key"]] for job, _ in done if job["kind"] == "real_test")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m, label in zip(axes, ("accuracy", "fid", "spread"),
                            ("accuracy on the digit asked for", "FID (course classifier features)",
                             "within-class spread / real digits'")):
        ws = [job["w"] for job, _ in guided]
        ys = [t[m][0] for _, t in guided]
        yerr = [[t[m][0] - t[m][1] for _, t in guided], [t[m][2] - t[m][0] for _, t in guided]]
        ax.errorbar(ws, ys, yerr=yerr, fmt="o-", capsize=3, label="guided DDIM samples")
        ax.axhline(real[m][0], color="gray", ls=":", label="real held-out digits")
        ax.set(xlabel="guidance weight w (0: unconditional, 1: conditional)", ylabel=label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{args.samples} samples per w ({args.samples // 10} of each digit), DDIM S = {args.steps}, "
                 f"{CONFIDENCE:.0%} paired bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=100)
    plt.close(fig)

    total = sum(r.get("elapsed_s", 0.0) for _, r in done)
    command = ("python scripts/evaluate_guidance.py " + " ".join(ctx["argv"])).strip()
    text = ["# Classifier-free guidance: accuracy against FID, KID and diversity", "",
            f"Written by `{command}`; re-running it continues an interrupted run (`cache.json`).", "",
            "## The run", "",
            f"- Model: `{args.model.name}`, {model_info['steps']:,} training steps, sha256 `{model_info['sha256']}`.",
            f"- {args.samples} samples per w, row i asking for digit i % 10, from one x_T (seed {args.seed}) shared "
            f"by every w; deterministic DDIM, S = {args.steps} trailing timesteps; samples clamped to [-1, 1].",
            f"- Metrics on the course classifier (`{args.classifier.name}`, sha256 `{ctx['classifier_sha'][:16]}`): "
            "accuracy on the digit asked for; FID and KID (all rows) against the 4,500 shipped train digits; "
            "within-class spread (grouped by the digit the classifier reads) as a share of the real held-out digits'. "
            f"Intervals: {CONFIDENCE:.0%} paired bootstrap, {args.resamples} resamples of the N rows (accuracy: Wilson's "
            "interval; its differences: the paired bootstrap).",
            f"- Machine: {machine(ctx['device'])}; device {ctx['device']}. "
            f"Time: {total / 60:.1f} min of evaluation in all; this invocation {run_time / 60:.1f} min.", "",
            "## What the numbers show", ""] + findings(done, table, diffs) + [
            "", "## Table", ""] + rows + [
            "", "## Files", "",
            "- `table.csv`: every setting with its intervals; `tradeoff.png`: the three metrics against w.",
            "- `samples.png`: the first ten samples of each w (digits 0 to 9), the same x_T in every column.",
            "- `cache.json` and `features/`: finished settings, keyed by the model's and classifier's sha256."]
    (out / "README.md").write_text("\n".join(text) + "\n")

    previews = []
    for job, _ in done:
        if job["kind"] == "cfg_ddim":
            part = torch.load(ctx["out"] / "features" / f"{stem(job)}.preview.pt", weights_only=True)
            previews.append(part)
    if previews:
        ax = show_images(torch.cat(previews), nrow=10, title="one row per w (" + ", ".join(
            f"{job['w']:g}" for job, _ in done if job["kind"] == "cfg_ddim") + "), digits 0 to 9 asked for")
        ax.figure.savefig(out / "samples.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_start = time.time()
    set_cpu_threads(args.threads)
    device = eval_device(args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, schedule, meta, model_sha = load_snapshot(args.model, device)
    if getattr(model, "num_classes", None) != 10:
        raise SystemExit(f"{args.model} is not a 10-class conditional model (num_classes={model.num_classes!r})")
    model_info = {"sha256": model_sha, "steps": int(meta.get("steps", 0))}
    classifier_sha = sha256_of(args.classifier)
    classifier = load_classifier(args.classifier, device=device)
    test_images, test_labels = load_mnist("test", source="shipped")
    keep = torch.linspace(0, len(test_images) - 1, min(args.samples, len(test_images))).round().long()
    ctx = {"args": args, "argv": argv, "model": model, "schedule": schedule, "device": device, "out": out,
           "classifier": classifier, "classifier_sha": classifier_sha, "stats_ref": reference_stats(args.classifier),
           "features_ref": reference_features(classifier), "real_test": (test_images[keep], test_labels[keep]),
           "x_T": torch.randn((args.samples, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed)),
           "y": torch.arange(args.samples) % 10}
    print(f"[guidance] model {args.model.name}: {model_info['steps']:,} steps, sha256 {model_sha[:12]}; "
          f"device {device}; writing to {out}")
    jobs = make_jobs(args, model_sha, classifier_sha)
    cache, computed = run_jobs(jobs, ctx, run_job, model_info, "guidance", lambda job, result: (
        f"{describe(job)}: accuracy {result['accuracy']:.3f}, {result['wall_time_s']:.0f} s"))
    done = [(job, cache["entries"][job["key"]]["result"]) for job in jobs]
    done.sort(key=lambda item: -1.0 if item[0]["w"] is None else item[0]["w"])
    table, diffs = measure(done, ctx)
    write_outputs(out, done, table, diffs, args, model_info, ctx, time.time() - run_start)
    print(f"[guidance] wrote table.csv, README.md, tradeoff.png, samples.png in {time.time() - run_start:.0f} s")
    for line in findings(done, table, diffs):
        print(line)
    return {"out": out, "computed": computed, "jobs": jobs, "model_sha256": model_sha, "table": table,
            "diffs": diffs}


if __name__ == "__main__":
    main()
