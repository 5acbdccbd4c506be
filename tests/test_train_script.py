"""scripts/train_mnist_unet.py on a tiny UNet in a temporary tree: the card records what was run, a finished run
re-exports without training, and --init-from starts from another checkpoint's weights (and refuses a misfit)."""
import hashlib
import json
import sys

import pytest

from conftest import load_script
from course_lib import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def script(tmp_path, monkeypatch):
    module = load_script("train_mnist_unet")
    monkeypatch.setattr(module, "ROOT", tmp_path)  # checkpoints/ and course_lib/data/ under tmp_path
    (tmp_path / "course_lib" / "data").mkdir(parents=True)

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["train_mnist_unet.py", "--base-channels", "8", "--minutes", "5", *argv])
        module.main()
        data = tmp_path / "course_lib" / "data"
        return data, lambda name: (data / f"{name}.md").read_text()
    run.module = module
    return run


def test_card_records_the_run_and_a_finished_run_only_reexports(script):
    data, card = script("--name", "tiny", "--steps", "4", "--chunk", "2", "--lr", "1e-3", "--seed", "3")
    _, _, meta = load_checkpoint(data / "tiny.pt")
    assert meta["steps"] == 4 and meta["data"] == "subset" and meta["train_examples"] == 4500
    text = card("tiny")
    assert "base_channels=8" in text and "| seed | 3 |" in text and "AdamW lr 0.001" in text
    assert ("`python scripts/train_mnist_unet.py --size 28 --steps 4 --name tiny --base-channels 8 --lr 0.001 "
            "--seed 3`") in text, "the card's command must reproduce the run"
    assert (data / "tiny_samples.png").is_file()
    log = json.loads((data / "tiny.json").read_text())

    (data / "tiny.pt").unlink()  # the resume state is complete: a second call trains nothing, but exports again
    script("--name", "tiny", "--steps", "4", "--chunk", "2", "--lr", "1e-3", "--seed", "3")
    _, _, again = load_checkpoint(data / "tiny.pt")
    assert again["steps"] == 4 and again["loss_last_500"] == meta["loss_last_500"]
    relog = json.loads((data / "tiny.json").read_text())
    assert relog["precision_steps"] == log["precision_steps"]
    # a re-export keeps the run's wall time and the machine that trained it (a GPU run re-exported on a laptop)
    assert relog["wall_time_s"] == log["wall_time_s"] and relog["machine"] == log["machine"] == again["machine"]
    assert log["machine"] == script.module.machine_words()


def test_init_from_starts_from_the_weights_and_names_them(script):
    data, card = script("--name", "first", "--steps", "2", "--chunk", "2")
    sha = hashlib.sha256((data / "first.pt").read_bytes()).hexdigest()
    script("--name", "second", "--steps", "2", "--chunk", "2", "--data", "train20k",
           "--init-from", "course_lib/data/first.pt")
    _, _, meta = load_checkpoint(data / "second.pt")
    assert meta["init_from"] == "course_lib/data/first.pt" and meta["init_sha256"] == sha
    assert meta["train_examples"] == 20000 and meta["data"] == "train20k"
    text = card("second")
    assert f"| initial weights | `course_lib/data/first.pt` (EMA, sha256 `{sha[:16]}`: 2 steps on 4,500 digits" in text
    assert "mnist_extra.npz" in text and "--init-from course_lib/data/first.pt" in text

    with pytest.raises(RuntimeError, match="size mismatch"):  # a wider UNet cannot start from these weights
        script("--name", "third", "--steps", "2", "--chunk", "2", "--init-from", "course_lib/data/first.pt",
               "--base-channels", "16")
