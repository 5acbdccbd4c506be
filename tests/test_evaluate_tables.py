"""scripts/evaluate_tables.py on tiny settings: its tables, its cache (a re-run skips finished work), its folders."""
import json

import pytest

from conftest import check_one_model, load_script, read_csv, save_tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--samples", "8", "--steps", "10,20", "--etas", "0,1", "--recon-digits", "4", "--recon-steps", "10,20",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def evaluate():
    return load_script("evaluate_tables")


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained, very small UNet on a linear T = 100 schedule (so DDPM takes 100 steps): fast, and
    enough to exercise the pipeline; its samples are noise, so only the plumbing is checked here."""
    return save_tiny_unet(tmp_path / "tiny_unet.pt")



def test_tiny_run_writes_the_tables_and_a_rerun_uses_the_cache(evaluate, tiny_model, tmp_path):
    out = tmp_path / "tables"
    first = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    for name in ("table1.csv", "table1.md", "table1.png", "table2.csv", "table2.md", "table2.png", "samples.png",
                 "README.md", "cache.json"):
        assert (out / name).is_file(), f"{name} was not written"
    assert not (out / "partial").exists(), "partial chunks must be removed once their setting is finished"

    rows = read_csv(out / "table1.csv")
    assert list(rows[0]) == ["sampler", "eta", "num_steps", "spacing", "samples", "fid", "fid_low", "fid_high", "kid",
                             "kid_std", "kid_low", "kid_high", "classifier_score", "wall_time_s", "seconds_per_sample", "seed",
                             "model_steps", "model_sha256"]
    for r in rows:  # every setting has its bootstrap intervals
        assert float(r["fid_low"]) <= float(r["fid_high"]) and float(r["kid_low"]) <= float(r["kid_high"]), r
    pairs = read_csv(out / "pairs.csv")  # eta 0 vs 1 at each S, and each DDIM setting vs DDPM; FID and KID
    assert len(pairs) == 2 * (2 + 4) and {p["verdict"] for p in pairs} <= {"a lower", "b lower", "not resolved"}
    assert all(float(p["low"]) <= float(p["high"]) for p in pairs)
    assert len(list((out / "features").glob("*.pt"))) == 2 + 4 + 1
    settings = {(r["sampler"], r["eta"], r["num_steps"]) for r in rows}
    assert settings == {("real_test", "", ""), ("noise", "", ""), ("ddim", "0.0", "10"), ("ddim", "1.0", "10"),
                        ("ddim", "0.0", "20"), ("ddim", "1.0", "20"), ("ddpm_fixed_large", "", "100")}
    assert all(r["samples"] == "8" and float(r["fid"]) >= 0 for r in rows)
    assert {r["spacing"] for r in rows if r["sampler"] == "ddim"} == {"linspace"}
    table2 = read_csv(out / "table2.csv")
    assert [r["num_steps"] for r in table2] == ["10", "20"] and all(r["digits"] == "4" for r in table2)
    assert all(float(r["mse"]) > 0 for r in table2)
    md = (out / "table1.md").read_text()
    assert "| eta \\ S | 10 | 20 |" in md and "DDPM, fixed large" in md and "real held-out test digits" in md
    assert "| S | 10 | 20 |" in (out / "table2.md").read_text()
    readme = (out / "README.md").read_text()
    assert first["model_sha256"] in readme and "8 samples per setting" in readme and "linspace" in readme

    cache = json.loads((out / "cache.json").read_text())
    assert len(first["computed"]) == len(first["jobs"]) == len(cache["entries"]) == 2 + 4 + 1 + 2
    assert all(key.startswith(f"model={first['model_sha256']}") for key in cache["entries"])

    second = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    assert second["computed"] == [], "a re-run must skip every finished setting"
    assert read_csv(out / "table1.csv") == rows, "tables rebuilt from the cache must equal the first run's"

    # one more eta: only its settings run; the old entries stay in the cache
    third = evaluate.main(TINY[:4] + ["--etas", "0,0.5,1"] + TINY[6:] + ["--model", str(tiny_model), "--out", str(out),
                                                                          "--no-ddpm"])
    assert sorted(third["computed"]) == sorted(k for k in third["computed"] if "eta=0.5" in k)
    assert len(third["computed"]) == 2
    # a run of a few settings into the same folder keeps the features (and so the intervals) of the others
    assert len(list((out / "features").glob("*.pt"))) == 2 + 4 + 1 + 2


def test_a_run_with_another_model_drops_the_old_models_settings(evaluate, tiny_model, tmp_path, capsys):
    """A results folder holds one model's results: after a model swap, the old model's cache entries and features go."""
    out, args = tmp_path / "tables", TINY[:2] + ["--steps", "10", "--etas", "0"] + TINY[6:] + ["--no-ddpm"]
    old = evaluate.main(args + ["--model", str(tiny_model), "--out", str(out)])
    other = save_tiny_unet(tmp_path / "other_unet.pt", seed=1)
    capsys.readouterr()
    new = evaluate.main(args + ["--model", str(other), "--out", str(out)])
    assert new["model_sha256"] != old["model_sha256"] and sorted(new["computed"]) == sorted(j["key"] for j in new["jobs"])
    assert f"dropped {len(old['jobs'])} cached settings of another model" in capsys.readouterr().out
    entries = json.loads((out / "cache.json").read_text())["entries"]
    assert sorted(entries) == sorted(new["computed"])
    assert {e["model_sha256"] for e in entries.values()} == {new["model_sha256"]}
    assert {p.stem for p in (out / "features").glob("*.pt")} == {evaluate.stem({"key": k}) for k in entries
                                                                 if "kind=recon" not in k}


def test_an_interrupted_setting_resumes_from_its_finished_chunks(evaluate, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "tables"
    argv = ["--samples", str(evaluate.CHUNK + 4), "--steps", "5", "--etas", "0", "--recon-digits", "2",
            "--recon-steps", "5", "--no-ddpm", "--device", "cpu", "--model", str(tiny_model), "--out", str(out)]
    real_sample_chunk, calls = evaluate.sample_chunk, []

    def dies_on_second_chunk(job, x_T, chunk_index, ctx):
        calls.append(chunk_index)
        if chunk_index == 1:
            raise KeyboardInterrupt("killed")
        return real_sample_chunk(job, x_T, chunk_index, ctx)

    monkeypatch.setattr(evaluate, "sample_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(argv)
    assert len(list((out / "partial").glob("*.chunk0.pt"))) == 1, "the finished first chunk must be on disk"
    monkeypatch.setattr(evaluate, "sample_chunk", lambda *a: (calls.append(a[2]), real_sample_chunk(*a))[1])
    result = evaluate.main(argv)
    assert calls == [0, 1, 1], "the resumed run must sample only the missing chunk"
    assert any("ddim" in key for key in result["computed"])
    assert read_csv(out / "table1.csv")[-1]["samples"] == str(evaluate.CHUNK + 4)


def test_quick_and_full_runs_write_to_different_folders(evaluate):
    quick, full = evaluate.parse_args(["--quick"]), evaluate.parse_args([])
    assert quick.out != full.out and quick.out.resolve() == evaluate.QUICK_OUT.resolve()
    assert full.out.resolve() == evaluate.FULL_OUT.resolve()
    assert (quick.samples, quick.steps, quick.etas, quick.recon_digits) == (100, [10, 20, 50], [0.0, 1.0], 16)
    assert (full.samples, full.steps, full.etas) == (250, [10, 20, 50, 100, 1000], [0.0, 0.2, 0.5, 1.0])
    assert full.recon_steps == [10, 20, 50, 100, 200, 500, 1000] and full.ddpm and not quick.ddpm
    assert evaluate.parse_args(["--quick", "--samples", "7"]).samples == 7, "explicit options beat --quick"
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--quick", "--out", str(evaluate.FULL_OUT)])


def test_steps_beyond_the_models_T_are_refused(evaluate, tiny_model, tmp_path):
    with pytest.raises(SystemExit, match="exceed the model's T = 100"):
        evaluate.main(TINY[:2] + ["--steps", "200"] + TINY[4:] + ["--model", str(tiny_model), "--out", str(tmp_path)])


def test_cache_keys_change_with_model_setting_n_and_seed(evaluate):
    args = evaluate.parse_args(["--samples", "8", "--steps", "10", "--etas", "0"])
    keys = {job["key"] for job in evaluate.make_jobs(args, "a" * 64, "c" * 64)}
    assert len(keys) == len(evaluate.make_jobs(args, "a" * 64, "c" * 64)), "every setting has its own key"
    assert keys.isdisjoint(job["key"] for job in evaluate.make_jobs(args, "b" * 64, "c" * 64))
    for change in (["--samples", "9"], ["--seed", "1"]):
        other = evaluate.parse_args(["--samples", "8", "--steps", "10", "--etas", "0"] + change)
        other_keys = {job["key"] for job in evaluate.make_jobs(other, "a" * 64, "c" * 64) if job["kind"] == "ddim"}
        assert other_keys.isdisjoint(keys)
    costs = [job["cost"] for job in evaluate.make_jobs(evaluate.parse_args([]), "a" * 64, "c" * 64)]
    assert costs == sorted(costs), "cheap settings must come first"


def test_committed_tables_belong_to_the_shipped_model_and_reproduce(evaluate, tmp_path):
    """The committed results are complete, were made from the shipped checkpoint (same sha256), and the cheap
    part of them (baselines, DDIM eta = 0 at S = 10, inversion at S = 10) comes out the same when re-run here."""
    full = evaluate.parse_args([])
    model, committed = full.model, read_csv(evaluate.FULL_OUT / "table1.csv")
    settings = {(r["sampler"], r["eta"], r["num_steps"]) for r in committed}
    expected = {("ddim", str(eta), str(S)) for eta in full.etas for S in full.steps}
    expected |= {("real_test", "", ""), ("noise", "", ""), ("ddpm_fixed_large", "", "1000")}
    assert settings == expected, f"results/ddim_tables/table1.csv is incomplete: missing {expected - settings}"
    assert {r["samples"] for r in committed} == {str(full.samples)}
    sha = evaluate.sha256_of(model)
    assert {r["model_sha256"] for r in committed} == {sha}, (
        "results/ddim_tables/ was made from another model: re-run `python scripts/evaluate_tables.py` after training")
    table2 = read_csv(evaluate.FULL_OUT / "table2.csv")
    assert [int(r["num_steps"]) for r in table2] == full.recon_steps and {r["model_sha256"] for r in table2} == {sha}

    check_one_model(evaluate.FULL_OUT, sha, evaluate.stem)

    out = tmp_path / "recheck"
    evaluate.main(["--steps", "10", "--etas", "0", "--recon-steps", "10", "--no-ddpm", "--device", "cpu",
                   "--out", str(out)])
    fresh = {(r["sampler"], r["eta"], r["num_steps"]): r for r in read_csv(out / "table1.csv")}
    for key in [("real_test", "", ""), ("noise", "", ""), ("ddim", "0.0", "10")]:
        old = next(r for r in committed if (r["sampler"], r["eta"], r["num_steps"]) == key)
        assert float(fresh[key]["fid"]) == pytest.approx(float(old["fid"]), rel=1e-2, abs=1e-2), key
        assert float(fresh[key]["kid"]) == pytest.approx(float(old["kid"]), rel=1e-2, abs=1e-3), key
    recon = read_csv(out / "table2.csv")[0]
    assert float(recon["mse"]) == pytest.approx(float(table2[0]["mse"]), rel=1e-2)


def test_a_cuda_evaluation_turns_tf32_off_and_names_the_gpu(evaluate, monkeypatch):
    """On CUDA the scripts evaluate with TF32 off (so the CPU re-checks above hold for GPU-made results), and the
    README's machine line names the GPU; on a CPU neither changes. No GPU is needed: the device is faked."""
    import torch
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32  # flags, not attributes: by hand
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert evaluate.eval_device("cpu").type == "cpu" and torch.backends.cudnn.allow_tf32
        assert "GPU" not in evaluate.machine(torch.device("cpu"))
        monkeypatch.setattr(evaluate, "pick_device", lambda prefer=None: torch.device("cuda"))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake H200")
        device = evaluate.eval_device()
        assert device.type == "cuda"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert evaluate.machine(device).startswith("Fake H200 GPU (TF32 off), ")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
