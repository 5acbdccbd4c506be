"""Reproduce the DDIM paper's Table 1 (FID by S and eta) and Table 2 (inversion error by S) on our MNIST model.

    python scripts/evaluate_tables.py            # the full run: over an hour on a CPU, into results/ddim_tables/
    python scripts/evaluate_tables.py --quick    # a lecture-sized run: minutes, into results/ddim_tables_quick/
    python scripts/evaluate_tables.py --samples 8 --steps 10,20 --etas 0,1 --recon-digits 4 --recon-steps 10 --out /tmp/t

Table 1: N samples (--samples) from the shipped eps-model for every S in --steps and eta in --etas
with DDIM (eq. 12, `course_lib.ddim.ddim_sample`), plus DDPM's ancestral sampler with the "fixed
large" variance beta_t over all 1000 steps; every setting starts from the same x_T. Each sample set
is clamped to [-1, 1] (as the paper's code does before saving images) and scored against the real
train split with the course classifier's features: FID, KID and the classifier score
(`course_lib.metrics`). Baselines: N real held-out test digits, and the Gaussian noise x_T itself.
Table 2: reconstruction MSE per dimension of `ddim_invert` then `ddim_sample` (eta = 0) on held-out
test digits, for every S in --recon-steps.

Resumable: each finished setting is stored at once in <out>/cache.json, keyed by the sha256 of the
model file (and of the classifier), the setting, N and the seed; a setting in progress keeps its
finished chunks of samples in <out>/partial/. A re-run skips what is done, so a run killed at any
point continues where it stopped; a run with another model first drops the cached settings (and features) of the
old one, so <out> holds one model's results. Cheap settings run first. Every run rewrites the tables, plots and
README of <out> from the cache, for the current model.
"""
import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from course_lib.checkpoints import load_checkpoint  # noqa: E402
from course_lib.classifier import CLASSIFIER_PATH, embed, load_classifier, reference_stats  # noqa: E402
from course_lib.ddim import ddim_invert, ddim_sample, make_timesteps  # noqa: E402
from course_lib.ddpm import ddpm_sample  # noqa: E402
from course_lib.device import pick_device  # noqa: E402
from course_lib.metrics import (bootstrap_fid_kid, classifier_score, feature_stats, frechet_distance,  # noqa: E402
                                kid, percentile_interval, reference_features)
from course_lib.mnist import class_balanced, load_mnist  # noqa: E402
from course_lib.plots import image_grid  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "course_lib" / "data" / "mnist_unet28.pt"
FULL_OUT, QUICK_OUT = ROOT / "results" / "ddim_tables", ROOT / "results" / "ddim_tables_quick"
FULL = dict(samples=250, steps="10,20,50,100,1000", etas="0,0.2,0.5,1", recon_digits=64,
            recon_steps="10,20,50,100,200,500,1000", ddpm=True, out=FULL_OUT)
QUICK = dict(samples=100, steps="10,20,50", etas="0,1", recon_digits=16, recon_steps="10,50", ddpm=False,
             out=QUICK_OUT)
CHUNK = 50  # samples per sampler call; chunk c of x_T draws its sampler noise from seed 1000 * (seed + 1) + c
GRID = 10  # samples kept per setting for the figure
KID_SUBSETS, KID_SUBSET_SIZE = 100, 100
RESAMPLES, CONFIDENCE = 1000, 0.95  # paired bootstrap of FID and KID over the N samples of each setting
# DDIM paper, CIFAR-10 (quadratic spacing): Table 1 FID for eta = 0 and 1, Table 2 MSE per dimension
PAPER_FID = {0.0: {10: 13.36, 20: 6.84, 50: 4.67, 100: 4.16, 1000: 4.04},
             1.0: {10: 41.07, 20: 18.36, 50: 8.01, 100: 5.78, 1000: 4.73}}
PAPER_DDPM_FID = 3.17  # Table 1, sigma-hat ("fixed large") at S = 1000
PAPER_MSE = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004, 500: 0.0001, 1000: 0.0001}


# ---------------------------------------------------------------- arguments

def parse_args(argv=None):
    """Parse the command line; --quick fills every option not given explicitly with the lecture-sized values."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="lecture-sized run into results/ddim_tables_quick/")
    parser.add_argument("--samples", type=int, help="N samples per Table 1 setting (full: 250, quick: 100)")
    parser.add_argument("--steps", help="comma-separated S for Table 1 (full: 10,20,50,100,1000)")
    parser.add_argument("--etas", help="comma-separated eta for Table 1 (full: 0,0.2,0.5,1)")
    parser.add_argument("--recon-digits", type=int, help="M held-out digits for Table 2 (full: 64, quick: 16)")
    parser.add_argument("--recon-steps", help="comma-separated S for Table 2 (full: 10,20,50,100,200,500,1000)")
    parser.add_argument("--ddpm", action=argparse.BooleanOptionalAction, default=None,
                        help="include the 1000-step DDPM fixed_large row (full: yes, quick: no)")
    parser.add_argument("--spacing", default="linspace", choices=["linspace", "leading", "trailing", "quad"],
                        help="timestep sub-sequence (default linspace: uniform, from t = T-1 down to t = 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the sampler noise")
    parser.add_argument("--model", type=Path, default=MODEL_PATH, help="eps-model checkpoint")
    parser.add_argument("--classifier", type=Path, default=CLASSIFIER_PATH, help="classifier file for FID/KID")
    parser.add_argument("--out", type=Path, help="output folder (full: results/ddim_tables, quick: results/ddim_tables_quick)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or mps (default: course_lib.pick_device(); CUDA runs with TF32 off)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick and args.out.resolve() == FULL_OUT.resolve():
        parser.error(f"--quick must not write into {FULL_OUT}, the full run's folder; pick another --out")
    args.steps, args.recon_steps = _ints(args.steps, "--steps"), _ints(args.recon_steps, "--recon-steps")
    args.etas = [float(eta) for eta in str(args.etas).split(",") if eta.strip()]
    if args.samples < 2 or args.recon_digits < 1:
        parser.error("--samples must be >= 2 (a covariance needs two samples) and --recon-digits >= 1")
    if any(eta < 0 for eta in args.etas):
        parser.error(f"--etas {args.etas}: eta must be >= 0")
    return args


def _ints(text, name):
    values = [int(v) for v in str(text).split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise SystemExit(f"{name} {values}: give positive step counts S, e.g. 10,20,50")
    return values


# ---------------------------------------------------------------- settings and the cache

def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_jobs(args, model_sha, classifier_sha, T=1000):
    """Every setting to evaluate, as dicts with a unique cache `key` and a `cost` in model calls, cheapest first.

    T: the model's number of training steps, which DDPM's ancestral sampler visits one by one.
    """
    common = f"model={model_sha}|classifier={classifier_sha[:16]}"
    N, seed, spacing = args.samples, args.seed, args.spacing
    jobs = [{"kind": "baseline", "name": "real_test", "cost": 0},
            {"kind": "baseline", "name": "noise", "cost": 0}]
    for S in args.steps:
        for eta in args.etas:
            jobs.append({"kind": "ddim", "eta": eta, "num_steps": S, "spacing": spacing, "cost": N * S})
    if args.ddpm:
        jobs.append({"kind": "ddpm", "variance": "fixed_large", "num_steps": T, "cost": N * T})
    for S in args.recon_steps:
        jobs.append({"kind": "recon", "num_steps": S, "spacing": spacing, "digits": args.recon_digits,
                     "cost": 2 * args.recon_digits * S})
    for job in jobs:
        fields = {k: v for k, v in job.items() if k != "cost"}
        if job["kind"] != "recon":
            fields.update(N=N, seed=seed)
        job["key"] = common + "|" + "|".join(f"{k}={v}" for k, v in fields.items())
    return sorted(jobs, key=lambda job: job["cost"])  # stable: baselines, then by cost


def read_cache(path):
    if not path.exists():
        return {"format": 1, "entries": {}}
    try:
        cache = json.loads(path.read_text())
        assert isinstance(cache.get("entries"), dict)
        return cache
    except (ValueError, AssertionError) as err:
        backup = path.with_suffix(".json.corrupt")
        print(f"[evaluate] {path} is unreadable ({err}); moved it to {backup.name} and starting afresh")
        path.replace(backup)
        return {"format": 1, "entries": {}}


def write_atomic(path, write):
    """Write through a temporary file and a rename, so a kill never leaves half a file."""
    tmp = Path(str(path) + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def to_uint8_b64(images):
    """Images (B, 1, 28, 28) in [-1, 1] -> base64 of their uint8 pixels (for the figures)."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return base64.b64encode(pixels.tobytes()).decode()


def from_uint8_b64(text, size=28):
    """Inverse of to_uint8_b64: (B, 1, size, size) float in [-1, 1]."""
    pixels = torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
    return pixels.float().reshape(-1, 1, size, size) / 127.5 - 1


# ---------------------------------------------------------------- the work

def score_features(features, logits, ctx):
    """FID and KID of classifier features (N, D) against the train split, and the classifier score of logits (N, 10).

    KID: `course_lib.metrics.kid`, the mean (and std) over KID_SUBSETS random subsets, as notebook 08 computes it.
    """
    mu, sigma = feature_stats(features)
    kid_mean, kid_std = kid(features, ctx["features_ref"], KID_SUBSETS, KID_SUBSET_SIZE,
                            torch.Generator().manual_seed(ctx["args"].seed))
    return {"fid": frechet_distance(mu, sigma, *ctx["stats_ref"]), "kid": kid_mean, "kid_std": kid_std,
            "classifier_score": classifier_score(logits)[0], "n": int(features.shape[0])}


def stem(job):
    """A setting's file name stem: the first 20 hex digits of the sha256 of its cache key."""
    return hashlib.sha256(job["key"].encode()).hexdigest()[:20]


def load_snapshot(path, device):
    """(model, schedule, meta, sha256) of a checkpoint, read from a copy: the file may be replaced while we run."""
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "model.pt"
        shutil.copyfile(path, snapshot)
        return (*load_checkpoint(snapshot, device=device), sha256_of(snapshot))


def features_path(job, ctx):
    """Where a finished Table 1 setting keeps its features and logits, for the bootstrap intervals."""
    return ctx["out"] / "features" / (stem(job) + ".pt")


def save_features(job, ctx, features, logits):
    path = features_path(job, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save({"key": job["key"], "features": features.float(),
                                               "logits": logits.float()}, tmp))


def run_baseline(job, ctx):
    N = ctx["args"].samples
    if job["name"] == "real_test":
        test, _ = load_mnist("test", source="shipped")
        n = min(N, len(test))
        images = test[torch.linspace(0, len(test) - 1, n).round().long()]  # spread over the sorted classes
    else:
        images = ctx["x_T"]  # the samplers' own start: Gaussian noise
    start = time.time()
    features, logits = embed(images.clamp(-1, 1).cpu(), ctx["classifier"])
    save_features(job, ctx, features, logits)
    result = score_features(features, logits, ctx)
    return {**result, "wall_time_s": 0.0, "elapsed_s": time.time() - start}


def sample_chunk(job, x_T, chunk_index, ctx):
    """Samples (b, 1, 28, 28) of one setting from x_T (b, 1, 28, 28), with this chunk's own noise seed."""
    model, schedule, device = ctx["model"], ctx["schedule"], ctx["device"]
    generator = torch.Generator().manual_seed(1000 * (ctx["args"].seed + 1) + chunk_index)
    x_T = x_T.to(device)
    if job["kind"] == "ddpm":
        return ddpm_sample(model, x_T, schedule, variance="fixed_large", generator=generator, progress=False)
    timesteps = make_timesteps(schedule.T, job["num_steps"], job["spacing"])
    return ddim_sample(model, x_T, schedule, timesteps, eta=job["eta"], generator=generator, progress=False)


def run_sampler(job, ctx, bar):
    """Sample N images chunk by chunk (each finished chunk's features saved in <out>/partial/), then score them."""
    start = time.time()
    partial_dir = ctx["out"] / "partial"
    x_T = ctx["x_T"]
    features, logits, wall, preview = [], [], 0.0, None
    for c, first in enumerate(range(0, len(x_T), CHUNK)):
        path = partial_dir / f"{stem(job)}.chunk{c}.pt"
        steps_here = min(CHUNK, len(x_T) - first) * job["num_steps"]
        if path.exists():
            part = torch.load(path, weights_only=True)
        else:
            chunk_start = time.time()
            with torch.no_grad():
                x0 = sample_chunk(job, x_T[first:first + CHUNK], c, ctx).float().cpu()
            chunk_wall = time.time() - chunk_start
            f, l = embed(x0.clamp(-1, 1), ctx["classifier"])
            part = {"features": f, "logits": l, "wall_time_s": chunk_wall, "preview": x0[:GRID].clamp(-1, 1)}
            partial_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda tmp: torch.save(part, tmp))
        bar.update(steps_here)
        features.append(part["features"])
        logits.append(part["logits"])
        wall += float(part["wall_time_s"])
        preview = part["preview"] if preview is None else preview
    features, logits = torch.cat(features), torch.cat(logits)
    save_features(job, ctx, features, logits)
    return {**score_features(features, logits, ctx), "wall_time_s": wall, "seconds_per_sample": wall / len(features),
            "preview": to_uint8_b64(preview), "elapsed_s": time.time() - start}


def intervals(done, ctx):
    """Bootstrap intervals for every Table 1 setting and for the differences between settings.

    One paired bootstrap (RESAMPLES resamples of the N sample indices, the same for every setting, as row i
    of every setting starts from the same x_T) over the settings whose features are stored. Returns
    ({key: {"fid": (low, high), "kid": (low, high)}}, [pair]) where a pair is a dict with the two jobs'
    keys `a` and `b`, `metric`, `difference` (a - b), its interval `low`, `high` and `verdict`.
    """
    N = ctx["args"].samples
    sets = {}
    for job, r in done:
        path = features_path(job, ctx)
        if job["kind"] != "recon" and r["n"] == N and path.exists():
            stored = torch.load(path, weights_only=True)
            if stored["key"] == job["key"]:
                sets[job["key"]] = stored["features"]
    if not sets:
        return {}, []
    boot = bootstrap_fid_kid(sets, *ctx["stats_ref"], ctx["features_ref"], RESAMPLES,
                             torch.Generator().manual_seed(ctx["args"].seed))
    ci = {key: {"fid": percentile_interval(b["fid"], b["fid_point"], CONFIDENCE),
                "kid": percentile_interval(b["kid"], b["kid_point"], CONFIDENCE)}  # of the all-pairs KID
          for key, b in boot.items()}
    by_setting = {(job["kind"], job.get("eta"), job.get("num_steps")): job["key"] for job, _ in done if job["key"] in boot}
    pairs = []
    for (kind, eta, S), key in by_setting.items():
        if kind != "ddim":
            continue
        others = [k for (kd, e, s), k in by_setting.items() if kd == "ddim" and s == S and e > eta]
        others += [k for (kd, _, _), k in by_setting.items() if kd == "ddpm"]
        for other in others:
            for m in ("fid", "kid"):
                point = boot[key][f"{m}_point"] - boot[other][f"{m}_point"]
                low, high = percentile_interval(boot[key][m] - boot[other][m], point, CONFIDENCE)
                verdict = "a lower" if high < 0 else "b lower" if low > 0 else "not resolved"
                pairs.append({"a": key, "b": other, "metric": m, "difference": point, "low": low, "high": high,
                              "verdict": verdict})
    return ci, pairs


def cleanup_features(keys, ctx):
    """Remove stored features that belong to no cached setting (the cache holds every run's settings, so a run of a
    few settings into the same folder keeps the features of the others)."""
    keep = {features_path({"key": key}, ctx).name for key in keys}
    for path in (ctx["out"] / "features").glob("*.pt"):
        if path.name not in keep:
            path.unlink()


def cleanup_partial(job, ctx):
    """Remove a finished setting's chunks from <out>/partial/, and the folder once it is empty."""
    partial_dir = ctx["out"] / "partial"
    for path in partial_dir.glob(f"{stem(job)}.chunk*.pt"):
        path.unlink()
    if partial_dir.exists() and not any(partial_dir.iterdir()):
        partial_dir.rmdir()


def drop_other_models(cache, cache_path, ctx, model_info, name):
    """Remove the cached settings of any model but this one, with their features: a results folder describes one model,
    so after the shipped model changes its committed cache and features/ hold only the new model's."""
    stale = [key for key, entry in cache["entries"].items() if entry.get("model_sha256") != model_info["sha256"]]
    if not stale:
        return
    for key in stale:
        del cache["entries"][key]
        for path in (ctx["out"] / "features").glob(f"{stem({'key': key})}.*"):  # <stem>.pt, <stem>.preview.pt
            path.unlink()
    write_atomic(cache_path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1)))
    print(f"[{name}] dropped {len(stale)} cached settings of another model (and their features) from {cache_path}")


def run_jobs(jobs, ctx, run_job, model_info, name, summary):
    """Run every job that <out>/cache.json lacks, cheapest first, with one progress bar in image-calls.

    run_job(job, ctx, bar) -> a result dict of plain data; each is stored in the cache as soon as it is done, so a
    killed run loses at most the setting in progress (whose finished chunks stay in <out>/partial/).
    summary(job, result) -> the "[done]" line. Returns (cache, the keys computed by this call).
    """
    cache_path = ctx["out"] / "cache.json"
    cache = read_cache(cache_path)
    drop_other_models(cache, cache_path, ctx, model_info, name)
    todo = [job for job in jobs if job["key"] not in cache["entries"]]
    print(f"[{name}] {len(jobs)} settings, {len(jobs) - len(todo)} in the cache; "
          f"{sum(job['cost'] for job in todo):,} image-calls to go")
    computed = []
    with tqdm(total=sum(job["cost"] for job in todo), unit="img-call", desc="evaluate", smoothing=0.05) as bar:
        for job in todo:
            result = run_job(job, ctx, bar)
            cache["entries"][job["key"]] = {"setting": {k: v for k, v in job.items() if k not in ("key", "cost")},
                                            "model_sha256": model_info["sha256"], "model_steps": model_info["steps"],
                                            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                            "result": result}
            write_atomic(cache_path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1)))  # a kill loses nothing
            cleanup_partial(job, ctx)
            computed.append(job["key"])
            tqdm.write(f"[done] {summary(job, result)}")
    return cache, computed


def run_job(job, ctx, bar):
    """One setting's result dict: a baseline row, a Table 2 reconstruction or a Table 1 sampler setting."""
    if job["kind"] == "baseline":
        return run_baseline(job, ctx)
    return (run_recon if job["kind"] == "recon" else run_sampler)(job, ctx, bar)


def run_recon(job, ctx, bar):
    """Table 2: x0 -> ddim_invert -> x_T -> ddim_sample (eta = 0) -> x0_rec; MSE per dimension in [-1, 1] units."""
    start = time.time()
    x0 = ctx["recon_digits"].to(ctx["device"])
    timesteps = make_timesteps(ctx["schedule"].T, job["num_steps"], job["spacing"])
    with torch.no_grad():
        x_T = ddim_invert(ctx["model"], x0, ctx["schedule"], timesteps, progress=False)
        x0_rec = ddim_sample(ctx["model"], x_T, ctx["schedule"], timesteps, eta=0.0, progress=False)
    bar.update(job["cost"])
    per_digit = (x0_rec - x0).square().flatten(1).mean(1).cpu()  # (M,)
    wall = time.time() - start
    return {"mse": float(per_digit.mean()), "mse_std": float(per_digit.std()) if len(per_digit) > 1 else 0.0,
            "mse_max": float(per_digit.max()), "digits": int(len(per_digit)), "wall_time_s": wall,
            "preview": to_uint8_b64(x0_rec[:8].float().cpu()), "elapsed_s": wall}


def describe(job):
    if job["kind"] == "baseline":
        return f"baseline {job['name']}"
    if job["kind"] == "ddim":
        return f"DDIM eta={job['eta']:g} S={job['num_steps']}"
    if job["kind"] == "ddpm":
        return f"DDPM fixed_large S={job['num_steps']}"
    return f"inversion S={job['num_steps']}"


def summary(job, result):
    if job["kind"] == "recon":
        return f"MSE {result['mse']:.5f} (std {result['mse_std']:.5f}), {result['wall_time_s']:.0f} s"
    return (f"FID {result['fid']:.2f}, KID {1000 * result['kid']:.2f}e-3 (+- {1000 * result['kid_std']:.2f}), "
            f"score {result['classifier_score']:.2f}, {result['wall_time_s']:.0f} s")


# ---------------------------------------------------------------- outputs

def fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def collect(jobs, entries):
    """The results of this run's settings that are in the cache, as (job, result) pairs."""
    return [(job, entries[job["key"]]["result"]) for job in jobs if job["key"] in entries]


def write_table1(out, done, args, model_info, ci, pairs):
    rows = []
    for job, r in done:
        if job["kind"] == "recon":
            continue
        sampler = job["name"] if job["kind"] == "baseline" else ("ddim" if job["kind"] == "ddim" else "ddpm_fixed_large")
        rows.append({"sampler": sampler, "eta": job.get("eta", ""), "num_steps": job.get("num_steps", ""),
                     "spacing": job.get("spacing", ""), "samples": r["n"], "fid": f"{r['fid']:.4f}",
                     "fid_low": fmt(ci.get(job["key"], {}).get("fid", (None,))[0], 4),
                     "fid_high": fmt(ci.get(job["key"], {}).get("fid", (None, None))[1], 4),
                     "kid": f"{r['kid']:.6f}", "kid_std": f"{r['kid_std']:.6f}",
                     "kid_low": fmt(ci.get(job["key"], {}).get("kid", (None,))[0], 6),
                     "kid_high": fmt(ci.get(job["key"], {}).get("kid", (None, None))[1], 6),
                     "classifier_score": f"{r['classifier_score']:.4f}", "wall_time_s": f"{r['wall_time_s']:.1f}",
                     "seconds_per_sample": fmt(r.get("seconds_per_sample"), 4), "seed": args.seed,
                     "model_steps": model_info["steps"], "model_sha256": model_info["sha256"]})
    header = ["sampler", "eta", "num_steps", "spacing", "samples", "fid", "fid_low", "fid_high", "kid", "kid_std",
              "kid_low", "kid_high", "classifier_score",
              "wall_time_s", "seconds_per_sample", "seed", "model_steps", "model_sha256"]
    lines = [",".join(header)] + [",".join(str(row[h]) for h in header) for row in rows]
    (out / "table1.csv").write_text("\n".join(lines) + "\n")
    names = {job["key"]: describe(job) for job, _ in done}
    lines = ["a,b,metric,difference,low,high,verdict"] + [
        f"{names[p['a']]},{names[p['b']]},{p['metric']},{p['difference']:.6g},{p['low']:.6g},{p['high']:.6g},{p['verdict']}"
        for p in pairs]
    (out / "pairs.csv").write_text("\n".join(lines) + "\n")

    ddim = {(job["eta"], job["num_steps"]): r for job, r in done if job["kind"] == "ddim"}
    ddpm = next((r for job, r in done if job["kind"] == "ddpm"), None)
    ddpm_T = next((job["num_steps"] for job, _ in done if job["kind"] == "ddpm"), None)
    base = {job["name"]: r for job, r in done if job["kind"] == "baseline"}
    steps = [S for S in args.steps if any((eta, S) in ddim for eta in args.etas)]
    md = [f"# Table 1 analogue: sample quality by S and eta (MNIST, {args.samples} samples per setting)", "",
          f"Model: `{args.model.name}` after {model_info['steps']:,} training steps (sha256 "
          f"`{model_info['sha256'][:12]}`). Spacing `{args.spacing}`; seed {args.seed}; the same x_T for every "
          "setting. Features: the course classifier's 64 (not Inception). Lower FID and KID are better. "
          f"[low, high]: {CONFIDENCE:.0%} bootstrap interval ({RESAMPLES} resamples of the samples, percentile "
          "interval shifted by the bootstrap bias); `pairs.csv` has the paired intervals of differences.", ""]

    def with_ci(r, metric, scale, digits):
        key = next(job["key"] for job, res in done if res is r)
        low, high = ci.get(key, {}).get(metric, (None, None))
        text = f"{scale * r[metric]:.{digits}f}"
        return text if low is None else f"{text} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"

    def grid(title, value):
        table = [f"## {title}", "", "| eta \\ S | " + " | ".join(str(S) for S in steps) + " |",
                 "| --- |" + " ---: |" * len(steps)]
        for eta in args.etas:
            cells = [value(ddim[(eta, S)]) if (eta, S) in ddim else "" for S in steps]
            table.append(f"| {eta:g} | " + " | ".join(cells) + " |")
        if ddpm is not None:
            cells = [value(ddpm) if S == ddpm_T else "" for S in steps]
            if ddpm_T not in steps:
                cells[-1] = f"{value(ddpm)} (S = {ddpm_T})"
            table.append("| DDPM, fixed large | " + " | ".join(cells) + " |")
        return table + [""]

    md += grid(f"FID [{CONFIDENCE:.0%} interval]", lambda r: with_ci(r, "fid", 1, 2))
    md += grid(f"KID x 1000: mean over {KID_SUBSETS} subsets [{CONFIDENCE:.0%} interval of the all-pairs KID]",
               lambda r: with_ci(r, "kid", 1000, 2))
    md += grid("Classifier score (IS analogue, at most 10)", lambda r: f"{r['classifier_score']:.2f}")
    md += grid("Wall time of sampling (s)", lambda r: f"{r['wall_time_s']:.0f}")
    md += ["## Baselines", "", "| images | N | FID | KID x 1000 | classifier score |", "| --- | ---: | ---: | ---: | ---: |"]
    labels = {"real_test": "real held-out test digits", "noise": "Gaussian noise x_T (clamped to [-1, 1])"}
    for name, r in base.items():
        md.append(f"| {labels[name]} | {r['n']} | {with_ci(r, 'fid', 1, 2)} | {with_ci(r, 'kid', 1000, 2)} "
                  f"| {r['classifier_score']:.2f} |")
    md += ["", "Paper (CIFAR-10, Inception features, quadratic spacing), FID: eta = 0: "
           + ", ".join(f"S={S} {v}" for S, v in PAPER_FID[0.0].items()) + "; eta = 1: "
           + ", ".join(f"S={S} {v}" for S, v in PAPER_FID[1.0].items()) + "."]
    (out / "table1.md").write_text("\n".join(md) + "\n")

    keys = {(job["eta"], job["num_steps"]): job["key"] for job, _ in done if job["kind"] == "ddim"}
    ddpm_key = next((job["key"] for job, _ in done if job["kind"] == "ddpm"), None)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, scale, label in ((axes[0], "fid", 1, "FID"), (axes[1], "kid", 1000, "KID x 1000")):
        for eta in args.etas:
            xs = [S for S in steps if (eta, S) in ddim]
            if xs:
                ys = [scale * ddim[(eta, S)][metric] for S in xs]
                bounds = [ci.get(keys[(eta, S)], {}).get(metric) for S in xs]
                yerr = None if None in bounds else [[y - scale * b[0] for y, b in zip(ys, bounds)],
                                                    [scale * b[1] - y for y, b in zip(ys, bounds)]]
                ax.errorbar(xs, ys, yerr=yerr, fmt="o-", capsize=3, label=f"DDIM eta = {eta:g}")
        if ddpm is not None:
            ax.axhline(scale * ddpm[metric], color="k", ls="--", label=f"DDPM fixed large, S = {ddpm_T}")
            band = ci.get(ddpm_key, {}).get(metric)
            if band:
                ax.axhspan(scale * band[0], scale * band[1], color="k", alpha=0.08)
        if "real_test" in base:
            ax.axhline(scale * base["real_test"][metric], color="gray", ls=":", label="real test digits (floor)")
        ax.set(xscale="log", xlabel="S (sampling steps)", ylabel=label,
               title=f"{label}, {args.samples} samples, {CONFIDENCE:.0%} bootstrap intervals")
        ax.set_xticks(steps, [str(S) for S in steps])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    if "noise" in base:
        fig.suptitle(f"Gaussian noise scores FID {base['noise']['fid']:.0f} (off the scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "table1.png", dpi=100)
    plt.close(fig)


def write_table2(out, done, args, model_info):
    recon = [(job, r) for job, r in done if job["kind"] == "recon"]
    header = ["num_steps", "spacing", "digits", "mse", "mse_std", "mse_max", "wall_time_s", "paper_cifar10_mse",
              "model_steps", "model_sha256"]
    lines = [",".join(header)]
    for job, r in recon:
        lines.append(",".join(str(v) for v in (job["num_steps"], job["spacing"], r["digits"], f"{r['mse']:.6f}",
                                               f"{r['mse_std']:.6f}", f"{r['mse_max']:.6f}", f"{r['wall_time_s']:.1f}",
                                               PAPER_MSE.get(job["num_steps"], ""), model_info["steps"],
                                               model_info["sha256"])))
    (out / "table2.csv").write_text("\n".join(lines) + "\n")
    md = [f"# Table 2 analogue: reconstruction error of DDIM inversion ({args.recon_digits} held-out digits)", "",
          "x_0 -> `ddim_invert` -> x_T -> `ddim_sample` (eta = 0) -> x_0'; mean over digits of the per-pixel "
          f"squared error, pixels in [-1, 1]. Spacing `{args.spacing}`. Paper: CIFAR-10 test set.", "",
          "| S | " + " | ".join(str(job["num_steps"]) for job, _ in recon) + " |",
          "| --- |" + " ---: |" * len(recon),
          "| MSE per dim | " + " | ".join(f"{r['mse']:.5f}" for _, r in recon) + " |",
          "| std over digits | " + " | ".join(f"{r['mse_std']:.5f}" for _, r in recon) + " |",
          "| paper, CIFAR-10 | " + " | ".join(str(PAPER_MSE.get(job["num_steps"], "")) for job, _ in recon) + " |",
          "| wall time (s) | " + " | ".join(f"{r['wall_time_s']:.0f}" for _, r in recon) + " |", ""]
    (out / "table2.md").write_text("\n".join(md) + "\n")

    fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.2]})
    if recon:
        xs = [job["num_steps"] for job, _ in recon]
        half = [1.96 * r["mse_std"] / r["digits"] ** 0.5 for _, r in recon]  # 95 % interval of the mean over digits
        ax.errorbar(xs, [r["mse"] for _, r in recon], yerr=half, fmt="o-", capsize=3,
                    label=f"ours, MNIST ({args.recon_digits} digits, 95 % interval of the mean)")
        paper = [(S, PAPER_MSE[S]) for S in xs if S in PAPER_MSE]
        ax.plot([S for S, _ in paper], [v for _, v in paper], "s--", color="gray", label="paper, CIFAR-10")
        ax.set_xticks(xs, [str(S) for S in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        rows = [ctx_digits_preview(args)] + [from_uint8_b64(r["preview"]) for _, r in recon]
        ax_img.imshow(image_grid(torch.cat(rows), nrow=8), cmap="gray", vmin=0, vmax=1)
        ax_img.set_yticks([15 + 30 * i for i in range(len(rows))],
                          ["original"] + [f"S = {job['num_steps']}" for job, _ in recon])
        ax_img.set_xticks([])
        ax_img.set_title("held-out digits and their reconstructions")
    ax.set(xscale="log", yscale="log", xlabel="S (steps of inversion and of sampling)",
           ylabel="MSE per dimension", title="Table 2: inversion then sampling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "table2.png", dpi=100)
    plt.close(fig)


def recon_digits(M):
    """M held-out test digits, spread evenly over the (class-sorted) test split, then ordered so that the classes
    take turns (the first 8, shown in the figure, are 8 different digits): (M, 1, 28, 28)."""
    test, labels = load_mnist("test", source="shipped")
    index = torch.linspace(0, len(test) - 1, min(M, len(test))).round().long()
    return test[index[class_balanced(labels[index], len(index))]]


def ctx_digits_preview(args):
    return recon_digits(args.recon_digits)[:8]


def write_samples(out, done, args):
    rows = [(f"DDIM S = {job['num_steps']}", r) for job, r in done if job["kind"] == "ddim" and job["eta"] == 0]
    rows += [(f"DDPM S = {job['num_steps']}", r) for job, r in done if job["kind"] == "ddpm"]
    if not rows:
        return
    images = torch.cat([from_uint8_b64(r["preview"]) for _, r in rows])
    per_row = len(images) // len(rows)
    fig, ax = plt.subplots(figsize=(1.0 * per_row + 1.5, 1.0 * len(rows) + 0.6))
    ax.imshow(image_grid(images, nrow=per_row), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([15 + 30 * i for i in range(len(rows))], [name for name, _ in rows])
    ax.set_xticks([])
    ax.set_title("the same x_T in every row; DDIM rows have eta = 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def findings(done, args, ci, pairs):
    """What the numbers show, as sentences computed from the results and their bootstrap intervals.

    An ordering of two settings is stated only where the paired interval of their FID difference excludes 0;
    otherwise the sentence says the difference is not resolved at N = args.samples.
    """
    lines = []
    ddim = {(job["eta"], job["num_steps"]): (job, r) for job, r in done if job["kind"] == "ddim"}
    ddpm = next(((job, r) for job, r in done if job["kind"] == "ddpm"), None)
    base = {job["name"]: r for job, r in done if job["kind"] == "baseline"}
    fid_pairs = {(p["a"], p["b"]): p for p in pairs if p["metric"] == "fid"}
    conf = f"{CONFIDENCE:.0%}"

    def interval(job, r):
        low, high = ci.get(job["key"], {}).get("fid", (None, None))
        return f"{r['fid']:.2f}" + ("" if low is None else f" [{low:.2f}, {high:.2f}]")

    def compare(job_a, job_b):
        """(verdict about a against b, 'difference [low, high]') or None without an interval."""
        p = fid_pairs.get((job_a["key"], job_b["key"]))
        if p is None:
            return None
        return p["verdict"], f"{p['difference']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]"

    if "real_test" in base:
        lines.append(f"- Floor: {base['real_test']['n']} real held-out digits score FID {base['real_test']['fid']:.2f} "
                     f"against the train statistics (FID is biased upwards at small N; compare settings at equal N). "
                     + (f"Gaussian noise scores {base['noise']['fid']:.1f}." if "noise" in base else ""))
    if ci:
        lines.append(f"- Intervals: FID [low, high] is a {conf} bootstrap interval over the {args.samples} samples; a "
                     f"difference between two settings is resolved when its paired {conf} interval (`pairs.csv`) "
                     "excludes 0. Unresolved differences are not orderings.")
    else:
        lines.append("- No intervals: these results were computed before the script stored sample features, so it "
                     "states no ordering between settings. Delete cache.json and re-run the script to get them.")
    zero = sorted(S for (eta, S) in ddim if eta == 0)
    if zero:
        lines.append("- DDIM eta = 0: FID " + ", ".join(f"S={S}: {interval(*ddim[(0.0, S)])}" for S in zero) + ".")
    if ddpm is not None and zero:
        ddpm_job, ddpm_r = ddpm
        lines.append(f"- DDPM fixed-large, S = {ddpm_job['num_steps']}: FID {interval(*ddpm)}.")
        verdicts = {S: compare(ddim[(0.0, S)][0], ddpm_job) for S in zero}
        reach = [S for S, v in verdicts.items() if v is not None and v[0] != "b lower"]
        if None in verdicts.values():
            best = min(zero, key=lambda S: ddim[(0.0, S)][1]["fid"])
            lines.append(f"- DDIM (eta = 0) against {ddpm_job['num_steps']}-step DDPM: best eta = 0 FID "
                         f"{ddim[(0.0, best)][1]['fid']:.2f} (S = {best}) against {ddpm_r['fid']:.2f}; without intervals "
                         "this is not a tested ordering.")
        elif reach:
            S = reach[0]
            lines.append(f"- DDIM (eta = 0) is first not resolved worse than {ddpm_job['num_steps']}-step DDPM at "
                         f"S = {S} (FID difference DDIM - DDPM {verdicts[S][1]}, {conf}): a "
                         f"{ddpm_job['num_steps'] // S}x saving in model calls at this N (the paper: 10x to 50x).")
        else:
            lines.append(f"- DDIM (eta = 0) stays resolved worse than {ddpm_job['num_steps']}-step DDPM at every S "
                         f"tried (at S = {zero[-1]}: DDIM - DDPM {verdicts[zero[-1]][1] if verdicts[zero[-1]] else '?'}). "
                         f"Nor does it reach it in the paper on CIFAR-10: its best eta = 0 FID is "
                         f"{min(PAPER_FID[0.0].values())} against {PAPER_DDPM_FID} for 1000-step DDPM with sigma-hat.")
    if len(zero) > 1 and max(zero) >= 10 * min(zero):
        S_close, S_max = first_within_10_percent({S: ddim[(0.0, S)][1]["fid"] for S in zero})
        P_close, P_max = first_within_10_percent(PAPER_FID[0.0])
        lines.append(f"- Consistency of eta = 0: S = {S_close} comes within 10 % of its own S = {S_max} FID "
                     f"({ddim[(0.0, S_close)][1]['fid']:.2f} against {ddim[(0.0, S_max)][1]['fid']:.2f}), "
                     f"{S_max // S_close}x fewer model calls (the paper, CIFAR-10: S = {P_close}, "
                     f"{PAPER_FID[0.0][P_close]} against {PAPER_FID[0.0][P_max]}).")
    for S in sorted({S for (_, S) in ddim}):
        etas = sorted(eta for (eta, s) in ddim if s == S)
        if len(etas) < 2:
            continue
        low_eta, high_eta = etas[0], etas[-1]
        v = compare(ddim[(low_eta, S)][0], ddim[(high_eta, S)][0])
        if v is None:
            continue
        if v[0] == "a lower":
            said = f"eta = {low_eta:g} is better than eta = {high_eta:g} (as in the paper)"
        elif v[0] == "b lower":
            said = (f"eta = {high_eta:g} is better than eta = {low_eta:g}" +
                    (" (the paper finds all eta close at S = 1000)" if S >= 1000 else
                     " (unlike the paper, where eta = 0 is best for every S <= 100)"))
        else:
            said = f"eta = {low_eta:g} and eta = {high_eta:g} are not resolved"
        others = [f"{a:g} vs {b:g}" for i, a in enumerate(etas) for b in etas[i + 1:]
                  if (a, b) != (low_eta, high_eta) and compare(ddim[(a, S)][0], ddim[(b, S)][0])
                  and compare(ddim[(a, S)][0], ddim[(b, S)][0])[0] == "not resolved"]
        lines.append(f"- S = {S}: {said}; FID difference eta {low_eta:g} - eta {high_eta:g} {v[1]} ({conf})."
                     + (f" Not resolved: eta {', '.join(others)}." if others else ""))
    return lines


def first_within_10_percent(fid_by_S):
    """(the smallest S whose FID is within 10 % of the largest S's, the largest S) for {S: FID}."""
    S_max = max(fid_by_S)
    return min(S for S, fid in fid_by_S.items() if fid <= 1.1 * fid_by_S[S_max]), S_max


def recon_findings(done):
    recon = [(job["num_steps"], r["mse"]) for job, r in done if job["kind"] == "recon"]
    if len(recon) < 2:
        return []
    monotone = all(b[1] <= a[1] for a, b in zip(recon, recon[1:]))
    return ["- Inversion then sampling: MSE per dimension "
            + ", ".join(f"S={S}: {mse:.5f}" for S, mse in recon)
            + (". It falls as S grows, as in the paper." if monotone else
               ". It does not fall monotonically with S here, unlike the paper; see the std over digits.")]


def eval_device(prefer=None):
    """pick_device(prefer); on CUDA with TF32 off. TF32 rounds the inputs of float32 convolutions to 10 mantissa bits,
    and the committed results are re-checked on a CPU to 1e-3 (tests/test_evaluate_*.py): with TF32 off, an H200's
    guided DDIM samples (25 steps, w = 8) agreed with a CPU's to 7e-5."""
    device = pick_device(prefer)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


def machine(device=None):
    """The README's machine line: the CPU, its cores and torch; a CUDA device's name first where one evaluated."""
    gpu = f"{torch.cuda.get_device_name(device)} GPU (TF32 off), " if getattr(device, "type", None) == "cuda" else ""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads: {torch.get_num_threads()}"


def write_readme(out, done, args, model_info, ctx, run_time, ci, pairs):
    total = sum(r.get("elapsed_s", 0.0) for _, r in done)
    command = "python scripts/evaluate_tables.py " + " ".join(ctx["argv"])
    settings_t1 = sum(1 for job, _ in done if job["kind"] in ("ddim", "ddpm"))
    text = ["# DDIM paper's Tables 1 and 2, reproduced on the course's MNIST model", "",
            f"Written by `{command.strip()}`; re-running it continues an interrupted run (`cache.json`).", "",
            "## The run", "",
            f"- Model: `{args.model.name}`, {model_info['steps']:,} training steps, sha256 `{model_info['sha256']}`.",
            f"- Classifier for FID/KID: `{args.classifier.name}` (64 penultimate features; sha256 "
            f"`{ctx['classifier_sha'][:16]}`), reference statistics of the 4,500 shipped train digits.",
            f"- Table 1: {args.samples} samples per setting, {settings_t1} sampler settings; x_T from seed {args.seed} "
            f"(the same for every setting), sampler noise for chunk c of {CHUNK} samples from seed 1000 * (seed + 1) + c. "
            f"Timesteps: `{args.spacing}` spacing (uniform, as in the paper's non-CIFAR runs; linspace starts at "
            "t = T-1 where x_T ~ N(0, I) is the right start, and ends at t = 0). Samples are clamped to [-1, 1] "
            f"before scoring. KID: mean over {KID_SUBSETS} subsets of min(N, {KID_SUBSET_SIZE}); its interval is that of "
            "the all-pairs KID (the unbiased MMD^2 of all N samples against all train features). Intervals: "
            f"{CONFIDENCE:.0%} paired bootstrap ({RESAMPLES} resamples of the N sample indices, the same for every "
            "setting; percentile intervals shifted by the bootstrap bias).",
            f"- Table 2: {args.recon_digits} held-out test digits (spread evenly over the classes).",
            f"- Machine: {machine(ctx['device'])}; device {ctx['device']}.",
            f"- Time: {total / 60:.1f} min of evaluation in total over all (possibly resumed) runs; this invocation "
            f"took {run_time / 60:.1f} min.", "",
            "## What the numbers show", ""]
    text += findings(done, args, ci, pairs) + recon_findings(done)
    text += ["", "FID here uses a small MNIST classifier's features, so its scale is not comparable with the "
             "paper's CIFAR-10 Inception FIDs; the trends (across S and eta) are what to compare.", "",
             "## Files", "",
             "- `table1.csv`, `table1.md`, `table1.png`: FID, KID (with intervals) and classifier score by S and eta, "
             "with baselines.",
             "- `pairs.csv`: paired bootstrap intervals of FID and KID differences (eta against eta at each S, DDIM "
             "against DDPM); `verdict` says which is lower, or `not resolved`.",
             "- `features/`: the classifier features and logits of every Table 1 setting (what the intervals use).",
             "- `table2.csv`, `table2.md`, `table2.png`: reconstruction MSE by S.",
             "- `samples.png`: the first samples of each eta = 0 setting and of DDPM, from the same x_T.",
             "- `cache.json`: every finished setting, keyed by model hash, setting, N and seed."]
    (out / "README.md").write_text("\n".join(text) + "\n")


# ---------------------------------------------------------------- main

_REFERENCE = {}  # classifier sha256 -> train-split features, so repeated main() calls in one process embed once


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = eval_device(args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    model, schedule, meta, model_sha = load_snapshot(args.model, device)
    model_info = {"sha256": model_sha, "steps": int(meta.get("steps", 0))}
    too_many = [S for S in args.steps + args.recon_steps if S > schedule.T]
    if too_many:
        raise SystemExit(f"S = {too_many} exceed the model's T = {schedule.T} training steps")
    classifier_sha = sha256_of(args.classifier)
    classifier = load_classifier(args.classifier, device=device)
    if classifier_sha not in _REFERENCE:
        _REFERENCE[classifier_sha] = reference_features(classifier)
    ctx = {"args": args, "argv": argv, "model": model, "schedule": schedule, "device": device, "out": out,
           "classifier": classifier, "classifier_sha": classifier_sha, "stats_ref": reference_stats(args.classifier),
           "features_ref": _REFERENCE[classifier_sha],
           "x_T": torch.randn((args.samples, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed)),
           "recon_digits": recon_digits(args.recon_digits)}
    print(f"[evaluate] model {args.model.name}: {model_info['steps']:,} steps, sha256 {model_sha[:12]}; "
          f"device {device}; writing to {out}")

    jobs = make_jobs(args, model_sha, classifier_sha, schedule.T)
    cache, computed = run_jobs(jobs, ctx, run_job, model_info, "evaluate",
                               lambda job, result: f"{describe(job)}: {summary(job, result)}")

    done = collect(jobs, cache["entries"])
    cleanup_features(cache["entries"], ctx)
    ci, pairs = intervals(done, ctx)
    write_table1(out, done, args, model_info, ci, pairs)
    write_table2(out, done, args, model_info)
    write_samples(out, done, args)
    write_readme(out, done, args, model_info, ctx, time.time() - run_start, ci, pairs)
    print(f"[evaluate] wrote {', '.join(sorted(p.name for p in out.iterdir() if p.is_file()))} "
          f"in {time.time() - run_start:.0f} s")
    return {"out": out, "computed": computed, "cached": [job["key"] for job in jobs if job["key"] not in computed],
            "jobs": jobs, "model_sha256": model_sha}


if __name__ == "__main__":
    main()
