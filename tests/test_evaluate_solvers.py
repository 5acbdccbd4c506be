"""scripts/evaluate_solvers.py on tiny settings: its table, README and plot, its cache (a re-run skips finished work)."""
import json
import re

import pytest
import torch

from conftest import load_script, read_csv, save_tiny_unet
from course_lib.metrics import newcombe_interval

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--samples", "8", "--calls", "5,10", "--resamples", "50", "--device", "cpu"]


@pytest.fixture(scope="module")
def evaluate():
    return load_script("evaluate_solvers")


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained, very small UNet on a linear T = 100 schedule (so DDPM takes 100 calls): only the plumbing
    is checked here, its samples are noise."""
    return save_tiny_unet(tmp_path / "tiny_unet.pt")



def test_tiny_run_writes_its_outputs_and_a_rerun_uses_the_cache(evaluate, tiny_model, tmp_path):
    out = tmp_path / "solvers"
    first = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    for name in ("table.csv", "README.md", "quality_vs_calls.png", "cache.json"):
        assert (out / name).is_file(), f"{name} was not written"
    assert not (out / "partial").exists(), "partial chunks must be removed once their setting is finished"

    rows = read_csv(out / "table.csv")
    assert {(r["sampler"], r["calls"]) for r in rows} == {("real_test", "0"), ("ddim", "5"), ("dpm2m", "5"),
                                                          ("ddim", "10"), ("dpm2m", "10"), ("ddpm", "100")}
    for r in rows:
        assert r["samples"] == "8" and r["model_sha256"] == first["model_sha256"], r
        assert float(r["fid_low"]) < float(r["fid_high"]), f"every setting gets a FID interval: {r}"
        share, low, high = float(r["confident"]), float(r["confident_low"]), float(r["confident_high"])
        assert 0 <= low <= share <= high <= 1 and (share * 8).is_integer(), f"a share of 8 rows, with its interval: {r}"
    assert {r["spacing"] for r in rows if r["sampler"] in ("ddim", "dpm2m")} == {"trailing"}
    readme = (out / "README.md").read_text()
    assert first["model_sha256"] in readme and "8 samples per setting" in readme
    assert "5 calls: FID DDIM" in readme and "10 calls: FID DDIM" in readme, "one paired comparison per S"
    assert "100-step DDPM" in readme
    assert {(d["a"], d["b"]) for d in first["diffs"]} >= {(("ddim", 5), ("dpm2m", 5)), (("dpm2m", 10), ("ddpm", 100))}
    for d in first["diffs"]:  # an ordering is claimed exactly when the paired interval excludes 0
        assert (d["verdict"] == "not resolved") == (d["low"] <= 0 <= d["high"]), d

    cache = json.loads((out / "cache.json").read_text())
    assert len(first["computed"]) == len(first["jobs"]) == len(cache["entries"]) == 6
    assert all(key.startswith(f"model={first['model_sha256']}") for key in cache["entries"])

    second = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    assert second["computed"] == [], "a re-run must skip every finished setting"
    assert read_csv(out / "table.csv") == rows, "the table rebuilt from the cache must equal the first run's"

    third = evaluate.main(TINY[:2] + ["--calls", "5,10,15"] + TINY[4:] + ["--model", str(tiny_model),
                                                                           "--out", str(out), "--no-ddpm"])
    assert sorted(key.split("|kind=")[1] for key in third["computed"]) == [
        "ddim|calls=15|spacing=trailing", "dpm2m|calls=15|spacing=trailing"], "only the new S runs"
    assert "ddpm" not in {r["sampler"] for r in read_csv(out / "table.csv")}


def test_a_killed_setting_resumes_from_its_finished_chunks(evaluate, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "solvers"
    args = ["--samples", "60", "--calls", "5", "--no-ddpm", "--resamples", "20", "--device", "cpu",
            "--model", str(tiny_model), "--out", str(out)]
    calls = []
    real_sample_chunk = evaluate.sample_chunk

    def dying_sample_chunk(job, x_T, chunk_index, ctx):
        calls.append((job["kind"], chunk_index))
        if job["kind"] == "dpm2m" and chunk_index == 1:
            raise KeyboardInterrupt  # killed after chunk 0 of 2M was saved
        return real_sample_chunk(job, x_T, chunk_index, ctx)

    monkeypatch.setattr(evaluate, "sample_chunk", dying_sample_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(args)
    assert len(list((out / "partial").glob("*.chunk0.pt"))) == 1, "2M's first chunk (50 of 60 samples) was kept"
    calls.clear()

    def counting_sample_chunk(job, x_T, chunk_index, ctx):
        calls.append((job["kind"], chunk_index))
        return real_sample_chunk(job, x_T, chunk_index, ctx)

    monkeypatch.setattr(evaluate, "sample_chunk", counting_sample_chunk)
    resumed = evaluate.main(args)
    assert calls == [("dpm2m", 1)], "only 2M's missing chunk is sampled again; DDIM came from the cache"
    assert len(resumed["computed"]) == 1


def test_bad_arguments(evaluate, tiny_model, tmp_path):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--calls", "0,5"])
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--samples", "1"])
    with pytest.raises(SystemExit, match="exceeds the model's T = 100"):
        evaluate.main(["--calls", "200", "--samples", "4", "--model", str(tiny_model), "--out", str(tmp_path / "x"),
                       "--device", "cpu"])


def test_committed_results_belong_to_the_shipped_model(evaluate):
    """results/solvers/ is complete for the default settings, was made from the shipped checkpoint (same sha256),
    and its README states an ordering exactly where the paired interval excludes 0."""
    full = evaluate.parse_args([])
    rows = read_csv(evaluate.OUT / "table.csv")
    settings = {(r["sampler"], int(r["calls"])) for r in rows}
    expected = {("real_test", 0), ("ddpm", 1000)} | {(s, S) for s in evaluate.SOLVERS for S in full.calls}
    assert settings == expected, f"results/solvers/table.csv is incomplete: missing {expected - settings}"
    assert {r["samples"] for r in rows} == {str(full.samples)}
    sha = evaluate.sha256_of(full.model)
    assert {r["model_sha256"] for r in rows} == {sha}, (
        "results/solvers/ was made from another model: re-run `python scripts/evaluate_solvers.py` after training")
    entries = json.loads((evaluate.OUT / "cache.json").read_text())["entries"]
    assert {e["model_sha256"] for e in entries.values()} == {sha}, "cache.json holds another model's settings"
    assert {p.name.split(".")[0] for p in (evaluate.OUT / "features").iterdir()} <= {evaluate.stem({"key": k})
                                                                                      for k in entries}
    readme = (evaluate.OUT / "README.md").read_text()
    pattern = r"- (\d+) calls: FID DDIM [\d.]+, 2M [\d.]+; DDIM minus 2M ([-+][\d.]+) \[([-+][\d.]+), ([-+][\d.]+)\]: (.+)\."
    stated = re.findall(pattern, readme)
    assert len(stated) == len(full.calls), "one DDIM-vs-2M line per number of calls"
    for calls, _, low, high, verdict in stated:
        low, high = float(low), float(high)
        allowed = {"2M lower" if low > 0 else "DDIM lower" if high < 0 else "not resolved"}
        if low == 0 or high == 0:  # a bound printed as +-0.00 may lie on either side of 0
            allowed |= {"2M lower" if low == 0 else "DDIM lower", "not resolved"}
        assert verdict in allowed, (calls, verdict)
    for row in rows:
        assert float(row["fid_low"]) <= float(row["fid_high"]), row
    # the confident shares come from the stored features: recompute DDPM's and the real digits' from them
    classifier = evaluate.load_classifier(full.classifier)
    for row in (r for r in rows if r["sampler"] in ("ddpm", "real_test")):
        job = next(j for j in evaluate.make_jobs(full, sha, evaluate.sha256_of(full.classifier), 1000)
                   if (j["kind"], j["calls"]) == (row["sampler"], int(row["calls"])))
        stored = torch.load(evaluate.OUT / "features" / f"{evaluate.stem(job)}.pt", weights_only=True)
        with torch.no_grad():
            p_max = classifier.logits_from_features(stored["features"]).softmax(1).max(1).values
        assert float(row["confident"]) == pytest.approx((p_max >= evaluate.CONFIDENT).float().mean().item(), abs=1e-4)
    share = {r["sampler"]: float(r["confident"]) for r in rows if r["sampler"] in ("ddpm", "real_test")}
    assert f"real held-out digits {100 * share['real_test']:.1f} %" in readme
    assert f"DDPM fixed large {100 * share['ddpm']:.1f} %" in readme
    n = int(rows[0]["samples"])
    low, high = newcombe_interval(round(share["ddpm"] * n), n, round(share["real_test"] * n), n)
    verdict = "resolved below" if high < 0 else "resolved above" if low > 0 else "not resolved"
    assert (f"DDPM fixed large {100 * (share['ddpm'] - share['real_test']):+.1f} points "
            f"[{100 * low:+.1f}, {100 * high:+.1f}], {verdict}") in readme
