"""scripts/evaluate_solvers.py on tiny settings: its table, README and plot, its cache (a re-run skips finished work)."""
import json
import re

import pytest
import torch

from conftest import check_one_model, load_script, read_csv, save_tiny_unet
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
    check_one_model(evaluate.OUT, sha, evaluate.stem)
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


def test_compare_models_gives_paired_differences_of_two_runs(evaluate, tiny_model, tmp_path):
    """scripts/compare_models.py on two tiny runs: a run against itself differs by exactly 0; two models give each
    model's share and FID as its own run reports them, a difference that is b - a, and refuse runs of other x_T."""
    compare = load_script("compare_models")
    args = ["--samples", "8", "--calls", "5", "--no-ddpm", "--resamples", "50", "--device", "cpu"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    evaluate.main(args + ["--model", str(tiny_model), "--out", str(a)])
    evaluate.main(args + ["--model", str(save_tiny_unet(tmp_path / "other.pt", seed=1)), "--out", str(b)])
    evaluate.main(args + ["--model", str(tiny_model), "--out", str(c), "--seed", "1"])

    same = compare.main([str(a), str(a), "--resamples", "50"])
    assert sorted(compare.describe(r["setting"]) for r in same) == ["ddim, 5 calls", "dpm2m, 5 calls"]
    for r in same:
        assert r["confident_diff"] == 0 and r["confident_diff_ci"] == (0, 0) and r["only_a"] == r["only_b"] == 0
        assert r["fid_diff"] == 0 and r["fid_diff_ci"] == pytest.approx((0, 0), abs=1e-9)

    rows = compare.main([str(a), str(b), "--resamples", "50"])
    table_a, table_b = ({(r["sampler"], r["calls"]): r for r in read_csv(d / "table.csv")} for d in (a, b))
    for r in rows:
        kind = r["setting"].split("kind=")[1].split("|")[0]
        assert r["model_a"] != r["model_b"] and r["n"] == 8
        assert r["confident_a"] == pytest.approx(float(table_a[(kind, "5")]["confident"]))
        assert r["confident_b"] == pytest.approx(float(table_b[(kind, "5")]["confident"]))
        assert r["fid_a"] == pytest.approx(float(table_a[(kind, "5")]["fid"]), abs=1e-3)
        assert r["confident_diff"] == pytest.approx(r["confident_b"] - r["confident_a"])
        assert 8 * r["confident_diff"] == pytest.approx(r["only_b"] - r["only_a"])
        low, high = r["confident_diff_ci"]
        assert low <= r["confident_diff"] <= high and r["fid_diff_ci"][0] <= r["fid_diff_ci"][1]

    with pytest.raises(SystemExit, match="share no setting"):
        compare.main([str(a), str(c)])


def test_compare_models_pairs_the_rows_of_the_two_models(tmp_path):
    """Model b's samples equal model a's except 10 of 100 rows, replaced by featureless ones: the share falls by
    exactly the confident rows among those 10, no resample can show b ahead (paired), and FID rises."""
    from course_lib.classifier import load_classifier, reference_stats
    from course_lib.metrics import reference_features
    compare = load_script("compare_models")
    classifier = load_classifier(device="cpu")
    spread = torch.linspace(0, 4499, 100).long()  # the split is sorted by class: rows spread over all ten
    real = reference_features(classifier)[spread].double()  # (100, D) features of real train digits
    worse = real.clone()
    worse[::10] = 0  # rows 0, 10, ..., 90: no feature at all, which the classifier does not read confidently
    for folder, model, features in ((tmp_path / "a", "a" * 64, real), (tmp_path / "b", "b" * 64, worse)):
        (folder / "features").mkdir(parents=True)
        key = f"model={model}|classifier=c|N=100|seed=0|kind=ddim|calls=5|spacing=trailing"
        torch.save({"key": key, "features": features}, folder / "features" / "x.pt")
    with torch.no_grad():
        confident = classifier.logits_from_features(real[::10].float()).softmax(1).max(1).values >= 0.9
        assert (classifier.logits_from_features(worse[::10].float()).softmax(1).max(1).values < 0.9).all()
    (r,) = compare.compare(tmp_path / "a", tmp_path / "b", classifier, reference_stats(), reference_features(classifier),
                           num_resamples=200)
    assert (r["model_a"], r["model_b"]) == ("a" * 64, "b" * 64)
    assert (r["only_a"], r["only_b"]) == (int(confident.sum()), 0) and r["only_a"] >= 5
    assert r["confident_diff"] == pytest.approx(-r["only_a"] / 100)
    low, high = r["confident_diff_ci"]
    assert low < r["confident_diff"] < high <= 0, "paired: b never reads more rows confidently than a"
    assert r["fid_diff"] > 0 and r["fid_diff_ci"][0] > 0
