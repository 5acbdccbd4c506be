"""scripts/evaluate_guidance.py: a tiny run (outputs, cache, resume by setting), and the committed results/guidance/
tied to the shipped conditional model, with every stated rise or fall backed by its paired interval."""
import re

import pytest
import torch

from course_lib.checkpoints import load_checkpoint, save_checkpoint
from course_lib.ddim import ddim_sample, make_timesteps
from course_lib.guidance import guided_model
from course_lib.schedules import make_schedule
from course_lib.unet import UNet
from conftest import check_one_model, load_script, read_csv, save_tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--samples", "20", "--weights", "0,1,3", "--steps", "4", "--resamples", "50", "--device", "cpu"]


@pytest.fixture(scope="module")
def evaluate():
    return load_script("evaluate_guidance")


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained, very small 10-class UNet on a linear T = 100 schedule: the plumbing only."""
    return save_tiny_unet(tmp_path / "tiny_unet.pt", num_classes=10)



def stated_changes(readme):
    """Every 'metric rises/falls/is not resolved (point [low, high])' of the README's 'From w = a to w = b' lines."""
    lines = [line for line in readme.splitlines() if line.startswith("- From w = ")]
    found = re.findall(r"(accuracy|FID|within-class spread) (rises|falls|is not resolved) "
                       r"\(([-+][\d.]+) \[([-+][\d.]+), ([-+][\d.]+)\]\)", "\n".join(lines))
    return lines, [(metric, word, float(p), float(low), float(high)) for metric, word, p, low, high in found]


def check_stated_changes(readme, n_steps):
    lines, changes = stated_changes(readme)
    assert len(lines) == n_steps and len(changes) == 3 * n_steps, "one line per step in w, three metrics each"
    for metric, word, _, low, high in changes:  # an ordering exactly when the interval excludes 0
        assert word == ("rises" if low > 0 else "falls" if high < 0 else "is not resolved"), (metric, word, low, high)


def test_tiny_run_writes_its_outputs_and_a_rerun_uses_the_cache(evaluate, tiny_model, tmp_path):
    out = tmp_path / "guidance"
    first = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    for name in ("table.csv", "README.md", "tradeoff.png", "samples.png", "cache.json"):
        assert (out / name).is_file(), f"{name} was not written"
    assert not (out / "partial").exists(), "partial chunks must be removed once their setting is finished"
    rows = read_csv(out / "table.csv")
    assert [(r["setting"], r["w"]) for r in rows] == [("real_test", ""), ("cfg_ddim", "0"), ("cfg_ddim", "1"),
                                                      ("cfg_ddim", "3")]
    for r in rows:
        assert r["samples"] == "20" and r["model_sha256"] == first["model_sha256"], r
        for m in ("accuracy", "fid", "kid", "spread"):
            assert float(r[f"{m}_low"]) <= float(r[f"{m}_high"]), (m, r)
        assert 0 <= float(r["accuracy_low"]) and float(r["accuracy_high"]) <= 1, "a share stays in [0, 1]"
    assert float(rows[0]["spread"]) == pytest.approx(1.0), "spread is relative to the real digits'"
    check_stated_changes((out / "README.md").read_text(), 2)

    second = evaluate.main(TINY + ["--model", str(tiny_model), "--out", str(out)])
    assert second["computed"] == [] and read_csv(out / "table.csv") == rows, "a re-run rebuilds from the cache"
    third = evaluate.main(TINY[:2] + ["--weights", "0,1,2,3"] + TINY[4:] + ["--model", str(tiny_model),
                                                                          "--out", str(out)])
    assert [key.split("|kind=")[1] for key in third["computed"]] == ["cfg_ddim|w=2.0|steps=4|spacing=trailing"]


def test_bad_arguments(evaluate, tmp_path):
    for bad in (["--samples", "25"], ["--weights", "-1,2"], ["--weights", "a"], ["--resamples", "2"]):
        with pytest.raises(SystemExit):
            evaluate.parse_args(bad)
    unconditional = tmp_path / "plain.pt"
    save_checkpoint(unconditional, UNet(base_channels=8, channel_mults=(1,), num_res_blocks=1, attn=False),
                    make_schedule("linear", T=100))
    with pytest.raises(SystemExit, match="not a 10-class conditional model"):
        evaluate.main(TINY + ["--model", str(unconditional), "--out", str(tmp_path / "x")])


def test_committed_results_belong_to_the_shipped_model_and_reproduce(evaluate):
    """results/guidance/ is complete, made from the shipped conditional checkpoint (same sha256), its README states
    only resolved changes, and the first ten samples of the strongest guidance come out the same when re-run."""
    full = evaluate.parse_args([])
    rows = read_csv(evaluate.OUT / "table.csv")
    assert [float(r["w"]) for r in rows if r["setting"] == "cfg_ddim"] == full.weights
    assert {r["samples"] for r in rows} == {str(full.samples)}
    sha = evaluate.sha256_of(full.model)
    assert {r["model_sha256"] for r in rows} == {sha}, (
        "results/guidance/ was made from another model: re-run `python scripts/evaluate_guidance.py` after training")
    check_one_model(evaluate.OUT, sha, evaluate.stem)
    readme = (evaluate.OUT / "README.md").read_text()
    assert sha in readme
    check_stated_changes(readme, len(full.weights) - 1)

    model, schedule, _ = load_checkpoint(full.model)
    w = max(full.weights)
    key = next(job for job in evaluate.make_jobs(full, sha, evaluate.sha256_of(full.classifier))
               if job["kind"] == "cfg_ddim" and job["w"] == w)
    stored = torch.load(evaluate.OUT / "features" / f"{evaluate.stem(key)}.preview.pt", weights_only=True)
    x_T = torch.randn((full.samples, 1, 28, 28), generator=torch.Generator().manual_seed(full.seed))[:10]
    with torch.no_grad():
        fresh = ddim_sample(guided_model(model, torch.arange(10), w), x_T, schedule,
                            make_timesteps(schedule.T, full.steps, "trailing"), progress=False).clamp(-1, 1)
    assert (fresh - stored).abs().max() < 1e-3, "the committed samples do not come out of the shipped model"
