"""Sample quality against model calls: deterministic DDIM against DPM-Solver++(2M), and 1000-step DDPM as a yardstick.

    python scripts/evaluate_solvers.py       # the full run, into results/solvers/
    python scripts/evaluate_solvers.py --samples 16 --calls 5,10 --no-ddpm --out /tmp/solvers      # a smoke test

The full run is 500 x (2 x 160 + 1000) = 660,000 image-calls of the shipped model (DDPM's 1000 steps are three
quarters of them): about an hour on one thread of a 2-core x86 CPU (5 ms per image-call at batch 50 for the
1.24 M-parameter shipped model, measured: 58.6 min in all), more on a busy one, a few minutes on a GPU.

For every number of model calls S in --calls, N samples (--samples) from the eps-model with DDIM (eta = 0,
`course_lib.ddim_sample`) and with DPM-Solver++(2M) (`course_lib.dpm_solver_sample`), on the same timesteps
(--spacing, default trailing) and from the same x_T; plus DDPM's ancestral sampler with the "fixed large" variance
beta_t over all T steps (T model calls), and N real held-out digits as the floor. Samples are clamped to [-1, 1] and
scored against the real train split with the course classifier's features (`course_lib.metrics`): FID, KID and the
classifier score. Intervals: one paired bootstrap over the N rows (row i of every setting starts from the same x_T)
gives each FID and KID a 95 % interval, and each difference between two settings its own paired interval; an
ordering is reported only where that interval excludes 0.

Resumable: each finished setting is stored at once in <out>/cache.json, keyed by the sha256 of the model file and of
the classifier, the sampler, S, the spacing, N and the seed; its features are kept in <out>/features/ for the
bootstrap, and a setting in progress keeps its finished chunks in <out>/partial/. A re-run skips what is done, so a
run killed at any point continues where it stopped; cheap settings run first. Every run rewrites table.csv,
README.md and quality_vs_calls.png in <out> from the cache, for the current model.
"""
import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # course_lib, also where the repo is not pip-installed
from course_lib.classifier import CLASSIFIER_PATH, embed, load_classifier, reference_stats  # noqa: E402
from course_lib.ddim import ddim_sample, make_timesteps  # noqa: E402
from course_lib.ddpm import ddpm_sample  # noqa: E402
from course_lib.device import set_cpu_threads  # noqa: E402
from course_lib.dpm_solver import dpm_solver_sample  # noqa: E402
from course_lib.metrics import (bootstrap_fid_kid, classifier_score, feature_stats, frechet_distance,  # noqa: E402
                                mmd2_unbiased, newcombe_interval, percentile_interval, reference_features,
                                wilson_interval)
from course_lib.mnist import load_mnist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_tables import (eval_device, load_snapshot, machine, run_jobs, sha256_of, stem,  # noqa: E402
                             write_atomic)  # the same cache format, file names and helpers

MODEL_PATH = ROOT / "course_lib" / "data" / "mnist_unet28.pt"
OUT = ROOT / "results" / "solvers"
CALLS = "5,10,15,20,25,35,50"
CHUNK = 50  # samples per sampler call; chunk c of x_T draws DDPM's noise from seed 1000 * (seed + 1) + c
RESAMPLES, CONFIDENCE = 1000, 0.95
CONFIDENT = 0.9  # "read with confidence": the classifier's largest p(y | x) at least this
SOLVERS = {"ddim": "DDIM (eta = 0)", "dpm2m": "DPM-Solver++(2M)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500, help="N samples per setting (default 500)")
    parser.add_argument("--calls", default=CALLS, help=f"comma-separated model calls S per solver (default {CALLS})")
    parser.add_argument("--ddpm", action=argparse.BooleanOptionalAction, default=True,
                        help="include DDPM fixed_large over all T steps (default: yes)")
    parser.add_argument("--spacing", default="trailing", choices=["trailing", "linspace", "leading", "quad"],
                        help="timesteps of both solvers (default trailing: starts at t = T-1, where x_T is right)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of DDPM's noise")
    add_common_arguments(parser, MODEL_PATH, OUT)
    args = parser.parse_args(argv)
    try:
        args.calls = sorted({int(v) for v in str(args.calls).split(",") if v.strip()})
    except ValueError:
        parser.error(f"--calls {args.calls!r}: give positive integers, e.g. 5,10,20")
    if not args.calls or min(args.calls) < 1:
        parser.error(f"--calls {args.calls}: give positive numbers of model calls, e.g. 5,10,20")
    if args.samples < 2:
        parser.error("--samples must be >= 2 (a covariance needs two samples)")
    if args.resamples < 10:
        parser.error("--resamples must be >= 10")
    return args


def add_common_arguments(parser, model_path, out):
    """--model, --classifier, --out, --resamples, --device, --threads: the options every evaluation script shares."""
    parser.add_argument("--model", type=Path, default=model_path, help=f"eps-model checkpoint (default: {model_path.name})")
    parser.add_argument("--classifier", type=Path, default=CLASSIFIER_PATH, help="classifier file for the metrics")
    parser.add_argument("--out", type=Path, default=out, help=f"output folder (default {out.relative_to(ROOT)})")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or mps (default: course_lib.pick_device(); CUDA runs with TF32 off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: course_lib.set_cpu_threads' policy)")


# ---------------------------------------------------------------- settings and the cache

def make_jobs(args, model_sha, classifier_sha, T):
    """Every setting, as a dict with a unique cache `key` and its `cost` in model calls, cheapest first."""
    jobs = [{"kind": "real_test", "calls": 0}]
    for S in args.calls:
        jobs += [{"kind": solver, "calls": S, "spacing": args.spacing} for solver in SOLVERS]
    if args.ddpm:
        jobs.append({"kind": "ddpm", "calls": T, "variance": "fixed_large"})
    common = f"model={model_sha}|classifier={classifier_sha}|N={args.samples}|seed={args.seed}"
    for job in jobs:
        job["key"] = common + "|" + "|".join(f"{k}={v}" for k, v in job.items())
        job["cost"] = args.samples * job["calls"]
    return sorted(jobs, key=lambda job: job["cost"])  # stable: the floor, then by cost


# ---------------------------------------------------------------- the work

def sample_chunk(job, x_T, chunk_index, ctx):
    """Samples (b, 1, 28, 28) of one setting from x_T (b, 1, 28, 28)."""
    model, schedule = ctx["model"], ctx["schedule"]
    x_T = x_T.to(ctx["device"])
    if job["kind"] == "ddpm":
        generator = torch.Generator().manual_seed(1000 * (ctx["args"].seed + 1) + chunk_index)
        return ddpm_sample(model, x_T, schedule, variance="fixed_large", generator=generator, progress=False)
    timesteps = make_timesteps(schedule.T, job["calls"], job["spacing"])
    if job["kind"] == "ddim":
        return ddim_sample(model, x_T, schedule, timesteps, eta=0.0, progress=False)
    return dpm_solver_sample(model, x_T, schedule, timesteps, order=2, progress=False)


def run_job(job, ctx, bar):
    """Sample (or load) the N images of one setting chunk by chunk, embed them, keep their features; score them."""
    start = time.time()
    if job["kind"] == "real_test":
        test, _ = load_mnist("test", source="shipped")
        images = test[torch.linspace(0, len(test) - 1, min(ctx["args"].samples, len(test))).round().long()]
        features, logits = embed(images, ctx["classifier"])
        wall, preview = 0.0, images[:8].clone()  # a copy: a slice would save the whole tensor
    else:
        partial_dir = ctx["out"] / "partial"
        features, logits, wall, preview = [], [], 0.0, None
        for c, first in enumerate(range(0, len(ctx["x_T"]), CHUNK)):
            path = partial_dir / f"{stem(job)}.chunk{c}.pt"
            x_T = ctx["x_T"][first:first + CHUNK]
            if path.exists():
                part = torch.load(path, weights_only=True)
            else:
                chunk_start = time.time()
                with torch.no_grad():
                    x0 = sample_chunk(job, x_T, c, ctx).float().cpu().clamp(-1, 1)  # scored in the data range
                f, l = embed(x0, ctx["classifier"])
                part = {"features": f, "logits": l, "wall_time_s": time.time() - chunk_start, "preview": x0[:8].clone()}
                partial_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda tmp: torch.save(part, tmp))
            bar.update(len(x_T) * job["calls"])
            features.append(part["features"])
            logits.append(part["logits"])
            wall += float(part["wall_time_s"])
            preview = part["preview"] if preview is None else preview
        features, logits = torch.cat(features), torch.cat(logits)
    features_path = ctx["out"] / "features" / f"{stem(job)}.pt"
    features_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(features_path, lambda tmp: torch.save({"key": job["key"], "features": features,
                                                       "preview": preview}, tmp))
    mu, sigma = feature_stats(features)
    return {"fid": frechet_distance(mu, sigma, *ctx["stats_ref"]),
            "kid": float(mmd2_unbiased(features.double(), ctx["features_ref"].double())),
            "classifier_score": classifier_score(logits)[0], "n": int(features.shape[0]), "wall_time_s": wall,
            "seconds_per_sample": wall / len(features), "elapsed_s": time.time() - start}


def confident_rows(classifier, features):
    """(N,) bool: the rows of features (N, D) that the classifier reads with confidence, largest p(y | x) >= CONFIDENT."""
    with torch.no_grad():
        return classifier.logits_from_features(features.float()).softmax(1).max(1).values >= CONFIDENT


def intervals(done, ctx):
    """Paired bootstrap over the N rows: ({key: {"fid": (low, high), "kid": (low, high), "confident": (share, low,
    high)}}, [difference rows]). "confident": the share of rows the classifier reads with p(y | x) >= CONFIDENT, with
    its Wilson interval (issue 13's target for DDPM-1000 samples: at least 95 %, as real digits)."""
    stored = {}
    for job, _ in done:
        path = ctx["out"] / "features" / f"{stem(job)}.pt"
        if path.exists():
            data = torch.load(path, weights_only=True)
            if data["key"] == job["key"]:
                stored[job["key"]] = data["features"]
    if not stored:
        return {}, []
    boot = bootstrap_fid_kid(stored, *ctx["stats_ref"], ctx["features_ref"], ctx["args"].resamples,
                             torch.Generator().manual_seed(ctx["args"].seed))
    ci = {key: {m: percentile_interval(b[m], b[f"{m}_point"], CONFIDENCE) for m in ("fid", "kid")}
          for key, b in boot.items()}
    for key, features in stored.items():
        read = confident_rows(ctx["classifier"], features.to(ctx["device"]))
        k, n = int(read.sum()), len(read)
        ci[key]["confident"] = (k / n, *wilson_interval(k, n))
        ci[key]["confident_count"] = (k, n)
    by_setting = {(job["kind"], job["calls"]): job["key"] for job, _ in done if job["key"] in boot}
    comparisons = [(("ddim", S), ("dpm2m", S)) for S in ctx["args"].calls]
    most = max(ctx["args"].calls)  # each solver against itself at the most calls: where has it converged?
    comparisons += [((solver, S), (solver, most)) for solver in SOLVERS for S in ctx["args"].calls if S < most]
    ddpm = next(((kind, S) for kind, S in by_setting if kind == "ddpm"), None)
    if ddpm:
        comparisons += [((solver, S), ddpm) for S in ctx["args"].calls for solver in SOLVERS]
    diffs = []
    for a, b in comparisons:
        if a in by_setting and b in by_setting:
            A, B = boot[by_setting[a]], boot[by_setting[b]]
            point = A["fid_point"] - B["fid_point"]
            low, high = percentile_interval(A["fid"] - B["fid"], point, CONFIDENCE)
            verdict = "a lower" if high < 0 else "b lower" if low > 0 else "not resolved"
            diffs.append({"a": a, "b": b, "difference": point, "low": low, "high": high, "verdict": verdict})
    return ci, diffs


# ---------------------------------------------------------------- outputs

def name_of(setting):
    kind, S = setting
    return "DDPM fixed large" if kind == "ddpm" else f"{SOLVERS[kind]}, {S} calls"


def write_table(out, done, ci, args, model_info):
    header = ["sampler", "calls", "spacing", "samples", "fid", "fid_low", "fid_high", "kid", "kid_low", "kid_high",
              "classifier_score", "confident", "confident_low", "confident_high", "wall_time_s", "seconds_per_sample", "seed", "model_steps", "model_sha256"]
    lines = [",".join(header)]
    for job, r in done:
        band = ci.get(job["key"], {})
        fid_band, kid_band = band.get("fid", ("", "")), band.get("kid", ("", ""))
        row = [job["kind"], job["calls"], job.get("spacing", ""), r["n"], f"{r['fid']:.4f}",
               *(f"{v:.4f}" if v != "" else "" for v in fid_band), f"{r['kid']:.6f}",
               *(f"{v:.6f}" if v != "" else "" for v in kid_band), f"{r['classifier_score']:.4f}",
               *([f"{v:.4f}" for v in band["confident"]] if "confident" in band else ["", "", ""]),
               f"{r['wall_time_s']:.1f}", f"{r['seconds_per_sample']:.4f}", args.seed, model_info["steps"],
               model_info["sha256"]]
        lines.append(",".join(str(v) for v in row))
    (out / "table.csv").write_text("\n".join(lines) + "\n")


def write_plot(out, done, ci, args):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, label in SOLVERS.items():
        rows = [(job, r) for job, r in done if job["kind"] == kind]
        if not rows:
            continue
        xs = [job["calls"] for job, _ in rows]
        ys = [r["fid"] for _, r in rows]
        bands = [ci.get(job["key"], {}).get("fid") for job, _ in rows]
        yerr = None if None in bands else [[y - b[0] for y, b in zip(ys, bands)], [b[1] - y for y, b in zip(ys, bands)]]
        ax.errorbar(xs, ys, yerr=yerr, fmt="o-", capsize=3, label=label)
    for job, r in done:
        if job["kind"] == "ddpm":
            ax.axhline(r["fid"], color="k", ls="--", label=f"DDPM fixed large, {job['calls']} calls")
            band = ci.get(job["key"], {}).get("fid")
            if band:
                ax.axhspan(*band, color="k", alpha=0.08)
        if job["kind"] == "real_test":
            ax.axhline(r["fid"], color="gray", ls=":", label="real held-out digits (floor)")
    ax.set(xscale="log", xlabel="model calls per sample", ylabel="FID (course classifier features)",
           title=f"{args.samples} samples per setting, {CONFIDENCE:.0%} bootstrap intervals, {args.spacing} timesteps")
    ax.set_xticks(args.calls, [str(S) for S in args.calls])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_calls.png", dpi=100)
    plt.close(fig)


def findings(done, diffs, ci):
    """Sentences computed from the numbers; an ordering only where its paired interval excludes 0."""
    lines = []
    fid = {(job["kind"], job["calls"]): r["fid"] for job, r in done}
    floor = next((r for job, r in done if job["kind"] == "real_test"), None)
    if floor:
        lines.append(f"- Floor: {floor['n']} real held-out digits score FID {floor['fid']:.2f} against the train "
                     "statistics (FID is biased upwards at small N: compare settings at equal N only).")
    for d in diffs:
        if d["a"][0] == "ddim" and d["b"][0] == "dpm2m":
            S = d["a"][1]
            verdict = {"a lower": "DDIM lower", "b lower": "2M lower", "not resolved": "not resolved"}[d["verdict"]]
            lines.append(f"- {S} calls: FID DDIM {fid[d['a']]:.2f}, 2M {fid[d['b']]:.2f}; DDIM minus 2M "
                         f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]: {verdict}.")
    for solver in SOLVERS:
        own = [d for d in diffs if d["a"][0] == solver and d["b"][0] == solver]
        if own:
            lines.append(f"- {SOLVERS[solver]}, FID minus its own {own[0]['b'][1]}-call FID: " + "; ".join(
                f"{d['a'][1]} calls {d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" for d in own) + ".")
        against = [d for d in diffs if d["a"][0] == solver and d["b"][0] == "ddpm"]
        if against:
            reach = [d["a"][1] for d in against if d["verdict"] != "b lower"]
            ddpm_calls = against[0]["b"][1]
            last = max(against, key=lambda d: d["a"][1])
            lines.append(f"- {SOLVERS[solver]}: " + (
                f"the fewest calls tried at which its FID is not resolved above {ddpm_calls}-step DDPM's: "
                f"{min(reach)} ({ddpm_calls / min(reach):.0f}x fewer model calls)." if reach else
                f"its FID is resolved above {ddpm_calls}-step DDPM's at every number of calls tried; at "
                f"{last['a'][1]} calls by {last['difference']:+.2f} [{last['low']:+.2f}, {last['high']:+.2f}]."))
    most = max((job["calls"] for job, _ in done if job["kind"] in SOLVERS), default=None)
    shares = [(job, ci[job["key"]]["confident"]) for job, _ in done if "confident" in ci.get(job["key"], {})
              and (job["kind"] in ("real_test", "ddpm") or job["calls"] == most)]
    if shares:
        lines.append(f"- Read by the classifier with confidence p(y | x) >= {CONFIDENT} ({CONFIDENCE:.0%} Wilson "
                     "intervals; the table has every setting): " + "; ".join(
                         ("real held-out digits" if job["kind"] == "real_test" else name_of((job["kind"], job["calls"])))
                         + f" {100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" for job, (v, lo, hi) in shares) + ".")
        real = next((ci[job["key"]]["confident_count"] for job, _ in shares if job["kind"] == "real_test"), None)
        if real:
            k_real, n_real = real
            differences = []
            for job, _ in shares:
                if job["kind"] == "real_test":
                    continue
                k, n = ci[job["key"]]["confident_count"]
                low, high = newcombe_interval(k, n, k_real, n_real)
                verdict = "resolved below" if high < 0 else "resolved above" if low > 0 else "not resolved"
                differences.append(f"{name_of((job['kind'], job['calls']))} {100 * (k / n - k_real / n_real):+.1f} "
                                   f"points [{100 * low:+.1f}, {100 * high:+.1f}], {verdict}")
            lines.append(f"- Confident share minus the real held-out digits' ({CONFIDENCE:.0%} Newcombe intervals, two "
                         "independent samples): " + "; ".join(differences) + ".")
    return lines


def write_readme(out, done, ci, diffs, args, model_info, ctx, run_time):
    total = sum(r.get("elapsed_s", 0.0) for _, r in done)
    command = ("python scripts/evaluate_solvers.py " + " ".join(ctx["argv"])).strip()
    rows = ["| sampler | calls | FID [95 % interval] | KID x 1000 [95 % interval] | classifier score "
            f"| read with p >= {CONFIDENT} [95 %] | s per sample |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for job, r in done:
        band = ci.get(job["key"], {})
        fid = f"{r['fid']:.2f}" + (" [{:.2f}, {:.2f}]".format(*band["fid"]) if "fid" in band else "")
        kid = f"{1000 * r['kid']:.2f}" + (" [{:.2f}, {:.2f}]".format(*(1000 * v for v in band["kid"]))
                                          if "kid" in band else "")
        share = ("{:.1f} % [{:.1f}, {:.1f}]".format(*(100 * v for v in band["confident"]))
                 if "confident" in band else "")
        if job["kind"] == "real_test":
            rows.append(f"| real held-out digits | | {fid} | {kid} | {r['classifier_score']:.2f} | {share} | |")
        else:
            rows.append(f"| {name_of((job['kind'], job['calls']))} | {job['calls']} | {fid} | {kid} "
                        f"| {r['classifier_score']:.2f} | {share} | {r['seconds_per_sample']:.3f} |")
    text = ["# Sample quality against model calls: DDIM against DPM-Solver++(2M)", "",
            f"Written by `{command}`; re-running it continues an interrupted run (`cache.json`).", "",
            "## The run", "",
            f"- Model: `{args.model.name}`, {model_info['steps']:,} training steps, sha256 `{model_info['sha256']}`.",
            f"- {args.samples} samples per setting from one x_T (seed {args.seed}), the same for every setting; "
            f"timesteps `{args.spacing}` for both solvers; DDPM with the \"fixed large\" variance over all "
            f"{ctx['schedule'].T} steps. Samples clamped to [-1, 1] before scoring.",
            f"- FID and KID on the course classifier's 64 features (`{args.classifier.name}`, sha256 "
            f"`{ctx['classifier_sha'][:16]}`) against the 4,500 shipped train digits; KID over all N rows. "
            f"Intervals: {CONFIDENCE:.0%} paired bootstrap, {args.resamples} resamples of the N rows, percentile "
            "intervals shifted by the bootstrap bias.",
            f"- Machine: {machine(ctx['device'])}; device {ctx['device']}.",
            f"- Time: {total / 60:.1f} min of evaluation over all (possibly resumed) runs; this invocation "
            f"{run_time / 60:.1f} min.", "",
            "## What the numbers show", ""] + findings(done, diffs, ci) + [
            "", "FID here uses a small MNIST classifier's features: compare settings with each other, not with "
            "published Inception FIDs.", "", "## Table", ""] + rows + [
            "", "## Files", "",
            "- `table.csv`: every setting, with its intervals.",
            "- `quality_vs_calls.png`: FID against model calls, both solvers, DDPM and the floor.",
            "- `cache.json`: every finished setting, keyed by model and classifier hash, setting, N and seed; "
            "`features/`: their classifier features, for the bootstrap."]
    (out / "README.md").write_text("\n".join(text) + "\n")


# ---------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_start = time.time()
    set_cpu_threads(args.threads)  # --threads, else the course's policy: one thread on a busy machine
    device = eval_device(args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, schedule, meta, model_sha = load_snapshot(args.model, device)
    model_info = {"sha256": model_sha, "steps": int(meta.get("steps", 0))}
    if max(args.calls) > schedule.T:
        raise SystemExit(f"--calls {max(args.calls)} exceeds the model's T = {schedule.T} training steps")
    classifier_sha = sha256_of(args.classifier)
    classifier = load_classifier(args.classifier, device=device)
    ctx = {"args": args, "argv": argv, "model": model, "schedule": schedule, "device": device, "out": out,
           "classifier": classifier, "classifier_sha": classifier_sha, "stats_ref": reference_stats(args.classifier),
           "features_ref": reference_features(classifier),
           "x_T": torch.randn((args.samples, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed))}
    print(f"[solvers] model {args.model.name}: {model_info['steps']:,} steps, sha256 {model_sha[:12]}; "
          f"device {device}; writing to {out}")
    jobs = make_jobs(args, model_sha, classifier_sha, schedule.T)
    cache, computed = run_jobs(jobs, ctx, run_job, model_info, "solvers", lambda job, result: (
        f"{job['kind']} {job['calls']} calls: FID {result['fid']:.2f}, {result['wall_time_s']:.0f} s"))
    done = [(job, cache["entries"][job["key"]]["result"]) for job in jobs]
    done.sort(key=lambda item: (list(SOLVERS).index(item[0]["kind"]) if item[0]["kind"] in SOLVERS else
                                (-1 if item[0]["kind"] == "real_test" else len(SOLVERS)), item[0]["calls"]))
    ci, diffs = intervals(done, ctx)
    write_table(out, done, ci, args, model_info)
    write_plot(out, done, ci, args)
    write_readme(out, done, ci, diffs, args, model_info, ctx, time.time() - run_start)
    print(f"[solvers] wrote table.csv, README.md, quality_vs_calls.png in {time.time() - run_start:.0f} s")
    for line in findings(done, diffs, ci):
        print(line)
    return {"out": out, "computed": computed, "jobs": jobs, "model_sha256": model_sha, "diffs": diffs, "ci": ci}


if __name__ == "__main__":
    main()
