"""Checkpoints round-trip exactly, load with weights_only=True, and fail with teaching ValueErrors."""
import pytest
import torch

from course_lib.checkpoints import load_checkpoint, save_checkpoint
from course_lib.mlp import MLPDenoiser
from course_lib.schedules import make_schedule
from course_lib.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def small_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1)


@pytest.fixture
def mlp_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mlp.pt"
    save_checkpoint(path, MLPDenoiser(hidden_dim=32), make_schedule("cosine", 200), meta={"steps": 7, "loss": 0.5})
    return path


@pytest.mark.parametrize("model, x_t", [(small_unet(), torch.randn(3, 1, 28, 28)),
                                        (MLPDenoiser(hidden_dim=32), torch.randn(3, 2))])
def test_round_trip_gives_identical_outputs(tmp_path, model, x_t):
    path = tmp_path / "model.pt"
    schedule = make_schedule("cosine", 200)
    save_checkpoint(path, model, schedule, meta={"steps": 12, "seed": 0, "loss": 0.25})
    loaded, loaded_schedule, meta = load_checkpoint(path)
    t = torch.tensor([0, 50, 199])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x_t, t), model(x_t, t))
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert not loaded.training, "load_checkpoint must return the model in eval mode"
    assert loaded_schedule.config() == {"name": "cosine", "T": 200}
    assert torch.equal(loaded_schedule.alpha_bar, schedule.alpha_bar)
    assert meta == {"steps": 12, "seed": 0, "loss": 0.25}


def test_ema_weights_saved_separately(tmp_path):
    model, ema_model = small_unet(0), small_unet(1)
    path = tmp_path / "ema.pt"
    save_checkpoint(path, model, make_schedule(), ema_model=ema_model)
    with_ema, _, _ = load_checkpoint(path)
    without_ema, _, _ = load_checkpoint(path, use_ema=False)
    for name, p in ema_model.state_dict().items():
        assert torch.equal(with_ema.state_dict()[name], p)
    for name, p in model.state_dict().items():
        assert torch.equal(without_ema.state_dict()[name], p)


def test_file_is_plain_data_for_weights_only(mlp_file):
    checkpoint = torch.load(mlp_file, weights_only=True)
    assert checkpoint["model_class"] == "MLPDenoiser"
    assert checkpoint["model_config"] == MLPDenoiser(hidden_dim=32).config()
    assert checkpoint["schedule_config"] == {"name": "cosine", "T": 200}
    assert checkpoint["format_version"] == 1 and checkpoint["ema_state_dict"] is None
    with pytest.raises(ValueError, match=r"meta\['when'\] has type object"):
        save_checkpoint(mlp_file, MLPDenoiser(), make_schedule(), meta={"when": object()})


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(ValueError, match=r"no checkpoint file at .*nowhere"):
        load_checkpoint(path)


def test_truncated_file_is_reported_corrupt(mlp_file):
    data = mlp_file.read_bytes()
    mlp_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated.*fresh copy"):
        load_checkpoint(mlp_file)
    mlp_file.write_text("<html>404 Not Found</html>")  # a failed download saved as .pt
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(mlp_file)


def test_foreign_file_is_not_ours(tmp_path):
    path = tmp_path / "raw.pt"
    torch.save(MLPDenoiser().state_dict(), path)  # a bare state_dict, not save_checkpoint's format
    with pytest.raises(ValueError, match=r"not a course_lib checkpoint: missing keys \['format_version'"):
        load_checkpoint(path)


def test_expect_reports_what_differs(mlp_file, tmp_path):
    with pytest.raises(ValueError, match="model_class='MLPDenoiser' \\(expected 'UNet'\\)"):
        load_checkpoint(mlp_file, expect={"model_class": "UNet"})
    with pytest.raises(ValueError, match=r"hidden_dim=32 \(expected 128\)"):
        load_checkpoint(mlp_file, expect=MLPDenoiser())
    with pytest.raises(ValueError, match="image_size"):
        load_checkpoint(mlp_file, expect={"image_size": 28})
    model, _, _ = load_checkpoint(mlp_file, expect={"model_class": "MLPDenoiser", "hidden_dim": 32})
    assert model.config()["hidden_dim"] == 32

    path = tmp_path / "unet.pt"
    save_checkpoint(path, small_unet(), make_schedule())
    load_checkpoint(path, expect={"channel_mults": [1, 2]})  # a list matches the saved tuple
    with pytest.raises(ValueError, match=r"channel_mults=\(1, 2\) \(expected \(1, 2, 2\)\)"):
        load_checkpoint(path, expect=UNet(base_channels=8, num_res_blocks=1))


def test_weights_that_do_not_fit_config(mlp_file):
    checkpoint = torch.load(mlp_file, weights_only=True)
    checkpoint["model_config"]["hidden_dim"] = 64  # config edited, weights still 32 wide
    torch.save(checkpoint, mlp_file)
    with pytest.raises(ValueError, match="do not fit a MLPDenoiser"):
        load_checkpoint(mlp_file)


def test_save_rejects_unknown_models(tmp_path):
    with pytest.raises(ValueError, match="cannot save a Linear"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), make_schedule())
    with pytest.raises(ValueError, match="ema_model must be the same"):
        save_checkpoint(tmp_path / "x.pt", MLPDenoiser(), make_schedule(), ema_model=MLPDenoiser(hidden_dim=8))
