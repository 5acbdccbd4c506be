"""Save and load trained denoisers as plain-data checkpoints that `torch.load(..., weights_only=True)` can read.

A checkpoint file is one dict:
    format_version   int, FORMAT_VERSION
    model_class      "UNet" or "MLPDenoiser" (a key of MODEL_CLASSES)
    model_config     model.config(), so MODEL_CLASSES[model_class](**model_config) rebuilds it
    schedule_config  schedule.config(), so make_schedule(**schedule_config) rebuilds it
    state_dict       the trained weights
    ema_state_dict   the EMA weights (same keys), or None
    meta             plain data: steps, seed, final loss, data_shape, ...
    train_state      None, or what `train` needs to resume: step, optimizer state, RNG state, losses,
                     train_config (see course_lib/train.py). A resumable file is still a normal checkpoint.
"""
import os

import torch
import torch.nn as nn

from course_lib.mlp import MLPDenoiser
from course_lib.schedules import make_schedule
from course_lib.unet import UNet

FORMAT_VERSION = 1
MODEL_CLASSES = {"UNet": UNet, "MLPDenoiser": MLPDenoiser}
REQUIRED_KEYS = ("format_version", "model_class", "model_config", "schedule_config", "state_dict")
PLAIN_TYPES = (bool, int, float, str, type(None), torch.Tensor)


def _check_plain(value, where):
    """Raise unless value is plain data (numbers, strings, tensors, lists, tuples, dicts) that weights_only can load."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise ValueError(f"{where} has type {type(value).__name__}; checkpoints hold only plain data "
                         f"(int, float, str, bool, None, tensors, lists, dicts); convert it, e.g. float(x)")


def save_checkpoint(path, model, schedule, ema_model=None, meta=None, train_state=None):
    """Write model (+ EMA copy) weights, configs and `meta` to `path` (see the module docstring for the layout).

    model, ema_model: a UNet or MLPDenoiser; schedule: a NoiseSchedule; meta, train_state: dicts of plain data.
    The file is written to `path + ".tmp"` and then renamed, so an interrupted save never leaves half a file.
    """
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise ValueError(f"cannot save a {name}; checkpoints support {sorted(MODEL_CLASSES)}")
    if ema_model is not None and (type(ema_model) is not type(model) or ema_model.config() != model.config()):
        raise ValueError("ema_model must be the same class and config as model (pass EMA(...).model)")
    _check_plain(meta, "meta")
    _check_plain(train_state, "train_state")
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model_class": name,
        "model_config": model.config(),
        "schedule_config": schedule.config(),
        "state_dict": model.state_dict(),
        "ema_state_dict": None if ema_model is None else ema_model.state_dict(),
        "meta": dict(meta or {}),
        "train_state": train_state,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(checkpoint, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def read_checkpoint(path, device=None):
    """torch.load the raw checkpoint dict (weights_only=True) and check that it is one of ours."""
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint file at {str(path)!r} (cwd is {os.getcwd()!r}); check the path, "
                         f"or train a model and save it with save_checkpoint")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated download, disk error, not a torch file, ...
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or truncated, torch.load failed with "
                         f"{type(err).__name__}: {str(err)[:200]}. Delete it and download it again "
                         f"(or re-run the training cell) to get a fresh copy") from err
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(f"{str(path)!r} is not a course_lib checkpoint: missing keys {missing}. "
                         f"Load raw state_dicts with torch.load; save with course_lib.checkpoints.save_checkpoint")
    if checkpoint["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format_version {checkpoint['format_version']}, newer than this "
                         f"course_lib ({FORMAT_VERSION}); update course_lib")
    if checkpoint["model_class"] not in MODEL_CLASSES:
        raise ValueError(f"{str(path)!r} holds a {checkpoint['model_class']!r}; known classes are {sorted(MODEL_CLASSES)}")
    return checkpoint


def check_expected(checkpoint, expect, path="checkpoint"):
    """Raise a ValueError saying what differs if the checkpoint's model is not the one `expect` describes.

    expect: a model instance (class and full config must match), or a dict with "model_class" and/or
    any model_config keys, e.g. {"model_class": "UNet", "in_channels": 1}.
    """
    if isinstance(expect, nn.Module):
        expect = {"model_class": type(expect).__name__, **expect.config()}
    found = {"model_class": checkpoint["model_class"], **checkpoint["model_config"]}
    unknown = sorted(set(expect) - set(found))
    if unknown:
        raise ValueError(f"expect names {unknown}, which a {found['model_class']} checkpoint does not have; "
                         f"it has {sorted(found)}")
    diffs = [f"{key}={found[key]!r} (expected {value!r})" for key, value in expect.items()
             if _normalize(found[key]) != _normalize(value)]
    if diffs:
        raise ValueError(f"{path} holds a different model than expected: " + ", ".join(diffs))


def _normalize(value):
    """Compare lists and tuples alike: (1, 2, 2) == [1, 2, 2]."""
    return list(value) if isinstance(value, (list, tuple)) else value


def build_model(checkpoint, use_ema=True, path="checkpoint"):
    """Rebuild the model of a checkpoint dict from its config and load its weights (the EMA ones if use_ema)."""
    model = MODEL_CLASSES[checkpoint["model_class"]](**checkpoint["model_config"])
    ema_weights = checkpoint.get("ema_state_dict")
    weights = ema_weights if (use_ema and ema_weights is not None) else checkpoint["state_dict"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit a {checkpoint['model_class']} with config "
                         f"{checkpoint['model_config']}; the file was edited or saved by other code:\n{err}") from err
    return model


def load_checkpoint(path, expect=None, device=None, use_ema=True):
    """Load a checkpoint written by save_checkpoint. Returns (model, schedule, meta).

    model: rebuilt from its config, EMA weights if saved and use_ema, in eval mode on `device`
    (default: CPU). schedule: make_schedule(**schedule_config) on the same device. meta: the saved dict.
    expect: optional model instance or dict of config values to check (see check_expected).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    checkpoint = read_checkpoint(path, device)
    if expect is not None:
        check_expected(checkpoint, expect, repr(str(path)))
    model = build_model(checkpoint, use_ema, repr(str(path))).to(device).eval()
    schedule = make_schedule(**checkpoint["schedule_config"], device=device)
    return model, schedule, checkpoint.get("meta", {})
