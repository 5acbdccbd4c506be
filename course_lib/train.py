"""Training a denoiser eps_theta with DDPM's simple loss, in one plain loop (nanoGPT style).

L_simple = E_{t, x0, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2,  DDPM eq. (14)

`train` samples random batches from a tensor of examples, steps AdamW, keeps an optional EMA copy of the
weights, and with `checkpoint_path` saves everything needed to resume: calling it again with the same path
continues where it stopped and ends with the same weights as one uninterrupted run.
With precision="bf16" the model's forward runs under torch.autocast(bfloat16) (the loss stays float32);
"auto" picks it only for image data on hardware that is fast at bfloat16 (see `pick_precision`).
"""
import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from course_lib.checkpoints import check_expected, read_checkpoint, save_checkpoint
from course_lib.device import pick_device
from course_lib.forward import add_noise


def diffusion_loss(model, x0, schedule, generator=None, y=None):
    """L_simple, DDPM eq. (14), averaged over a batch. x0: (B, ...) clean examples. Returns a scalar tensor.

    t ~ Uniform{0, ..., T-1} and eps ~ N(0, I) are drawn from `generator` (on its own device, then moved
    to x0's device, so a CPU generator gives the same draws whatever device trains).
    y: None, or (B,) labels for a class-conditional model, which is then called as model(x_t, t, y).
    """
    rng_device = generator.device if generator is not None else x0.device
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=rng_device).to(x0.device)  # (B,)
    eps = torch.randn(x0.shape, generator=generator, device=rng_device, dtype=x0.dtype).to(x0.device)  # (B, ...)
    x_t = add_noise(x0, t, eps, schedule)  # DDPM eq. (4)
    eps_pred = model(x_t, t) if y is None else model(x_t, t, y)
    if eps_pred.shape != eps.shape:
        raise ValueError(f"model(x_t, t) returned shape {tuple(eps_pred.shape)}, but eps_pred must have the shape "
                         f"of x_t, {tuple(x_t.shape)}")
    return F.mse_loss(eps_pred, eps)


def cpu_has_fast_bf16():
    """True where the CPU multiplies bfloat16 natively: torch uses AVX512 and Linux reports amx_bf16 or avx512_bf16.

    Elsewhere (AVX2-only CPUs, ARM, macOS, Windows) bf16 autocast is emulated or untested, so we say False
    (measured on an AVX2 AMD EPYC: a training step of the shipped UNet is 9x slower under bf16 than in fp32).
    """
    if "AVX512" not in torch.backends.cpu.get_cpu_capability() or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def pick_precision(precision, device, data):
    """Resolve train's `precision` to "fp32" or "bf16".

    "auto" gives "bf16" for image data (N, C, H, W) on a CPU with native bf16 (`cpu_has_fast_bf16`) or a CUDA
    GPU with native bf16 (Ampere or newer); otherwise "fp32". Small MLPs on 2-D points gain nothing from bf16
    (measured: slower on an AMX Xeon) and would only lose precision, hence the image condition.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision={precision!r} must be 'auto', 'fp32' or 'bf16'")
    if precision != "auto":
        return precision
    if data.dim() != 4:
        return "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if device.type == "cuda":
        try:
            fast = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation flag
            fast = torch.cuda.is_bf16_supported()
        return "bf16" if fast else "fp32"
    return "fp32"


def autocast_forward(model, device_type):
    """model(x_t, t, ...) under torch.autocast(bfloat16), returned as float32 so the loss is computed in float32."""
    def forward(x_t, t, *labels):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return model(x_t, t, *labels).float()
    return forward


class EMA:
    """Exponential moving average of a model's weights: w_ema <- decay * w_ema + (1 - decay) * w.

    Starts at the model's current weights. `.model` is the averaged copy (a plain model of the same class,
    use it for sampling); `.update(model)` after each optimizer step. Built on torch's AveragedModel.
    """

    def __init__(self, model, decay=0.999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay={decay} must lie in [0, 1]; 0.999 or 0.9999 are usual")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.update_parameters(model)  # AveragedModel's first update copies; later ones average
        self.model = self.averaged.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        """One EMA step towards `model`'s current weights."""
        self.averaged.update_parameters(model)

    def copy_to(self, model):
        """Load the averaged weights into `model` (same class and config)."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self):
        return self.averaged.state_dict()

    def load_state_dict(self, state_dict):
        self.averaged.load_state_dict(state_dict)


@dataclass
class TrainResult:
    """What `train` returns: the trained model, its EMA copy (or None), the loss at every step, the precision used."""

    model: nn.Module
    ema_model: nn.Module = None
    losses: list = field(default_factory=list)
    precision: str = "fp32"


def decayed_lr(lr, step, start, end):
    """lr before `start`, a half cosine down to 0 at `end`, 0 after."""
    fraction = min(max((step - start) / (end - start), 0.0), 1.0)
    return lr * 0.5 * (1 + math.cos(math.pi * fraction))


def train(model, data, schedule, steps, batch_size=128, lr=2e-4, ema_decay=None, seed=0, device=None,
          progress=True, log_every=50, grad_clip=1.0, checkpoint_path=None, checkpoint_every=None,
          precision="auto", lr_decay=None, labels=None, p_uncond=0.1):
    """Train `model` (in place) on `data` with L_simple for `steps` optimizer steps in total. Returns a TrainResult.

    data: (N, ...) float tensor of clean examples, e.g. (N, 1, 28, 28) in [-1, 1] or (N, 2) points; each step
    draws batch_size of them with replacement. All randomness (batches, t, eps) comes from one
    torch.Generator seeded with `seed`, so the same seed and model init give the same losses.
    ema_decay: keep an EMA copy with this decay (e.g. 0.999); None for no EMA.
    checkpoint_path: save a resumable checkpoint there every `checkpoint_every` steps and at the end;
    if the file exists, training resumes from it (`steps` counts all steps, including those already done).
    precision: "fp32", "bf16" (autocast around the model's forward; weights, optimizer and loss stay float32)
    or "auto" (see `pick_precision`). It is not part of the checkpoint: a run may resume in another precision.
    lr_decay: None (constant lr) or (start, end): the lr follows a half cosine from lr at step `start` to 0 at
    step `end` (set each step from the step count, so resuming needs no scheduler state).
    labels: None, or (N,) long class labels of `data` for a class-conditional model (`model.null_label` is "no
    label"): each example's label is replaced by the null label with probability p_uncond (label dropout,
    Ho & Salimans 2022), so one network learns the conditional and the unconditional eps.
    """
    if not torch.is_tensor(data) or not data.is_floating_point() or data.dim() < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty float tensor of examples, shape (N, ...), e.g. (N, 2) points")
    if lr_decay is not None and not (len(lr_decay) == 2 and 0 <= lr_decay[0] < lr_decay[1]):
        raise ValueError(f"lr_decay must be (start, end) with 0 <= start < end, got {lr_decay!r}")
    if labels is not None:
        if not torch.is_tensor(labels) or labels.shape != (len(data),) or labels.is_floating_point():
            raise ValueError(f"labels must be a LongTensor of shape (N,) = ({len(data)},), one class per example")
        if getattr(model, "num_classes", None) is None:
            raise ValueError("labels were given, but the model is unconditional; build UNet(..., num_classes=10)")
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond={p_uncond} must lie in [0, 1): the share of labels dropped to 'no label'")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs a checkpoint_path to save to")
    device = pick_device(device)
    precision = pick_precision(precision, device, data)
    model.to(device).train()
    forward = autocast_forward(model, device.type) if precision == "bf16" else model
    schedule = schedule.to(device)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    train_config = {"batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "seed": seed,
                    "grad_clip": grad_clip, "data_shape": list(data.shape), "schedule": schedule.config()}
    if lr_decay is not None:  # only then, so a constant-lr checkpoint may be continued with a decay
        train_config["lr_decay"] = list(lr_decay)
    if labels is not None:
        train_config["p_uncond"] = p_uncond
    losses = []  # one float per step done; len(losses) is the step counter

    if checkpoint_path is not None and os.path.exists(checkpoint_path):  # resume where the last call stopped
        losses = _resume(checkpoint_path, model, optimizer, ema, generator, train_config, device)

    def save():
        train_state = {"step": len(losses), "losses": losses, "optimizer": optimizer.state_dict(),
                       "rng_state": generator.get_state(), "train_config": train_config}
        meta = {"steps": len(losses), "seed": seed, "loss": losses[-1] if losses else None,
                "data_shape": list(data.shape[1:])}
        save_checkpoint(checkpoint_path, model, schedule, ema.model if ema else None, meta, train_state)

    bar = tqdm(range(len(losses), steps), initial=len(losses), total=steps, disable=not progress, desc="train")
    for _ in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=generator)  # (batch_size,)
        x0 = data[idx.to(data.device)].to(device)  # (batch_size, ...)
        y = None
        if labels is not None:  # label dropout: "no label" with probability p_uncond
            drop = torch.rand(batch_size, generator=generator) < p_uncond  # (batch_size,)
            y = torch.where(drop, model.null_label, labels[idx.to(labels.device)].cpu()).to(device)  # (batch_size,)
        if lr_decay is not None:
            for group in optimizer.param_groups:
                group["lr"] = decayed_lr(lr, len(losses), *lr_decay)
        loss = diffusion_loss(forward, x0, schedule, generator, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        losses.append(loss.item())
        if len(losses) % log_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-log_every:]) / log_every:.4f}")  # mean of the last log_every
        if checkpoint_every and len(losses) % checkpoint_every == 0:
            save()

    if checkpoint_path is not None:
        save()
    return TrainResult(model=model, ema_model=ema.model if ema else None, losses=losses, precision=precision)


def _resume(path, model, optimizer, ema, generator, train_config, device):
    """Load a resumable checkpoint into model, optimizer, EMA and generator. Returns the losses so far."""
    checkpoint = read_checkpoint(path, device)
    state = checkpoint.get("train_state")
    if state is None:
        raise ValueError(f"{str(path)!r} has no train_state (it was saved for inference, not by train); "
                         f"pass another checkpoint_path to train from scratch")
    check_expected(checkpoint, model, repr(str(path)))
    diffs = [f"{key}={value!r} (this call: {train_config.get(key)!r})"
             for key, value in state["train_config"].items() if value != train_config.get(key)]
    if diffs:
        raise ValueError(f"cannot resume from {str(path)!r}: it was trained with " + ", ".join(diffs)
                         + "; pass the same settings, or a new checkpoint_path to start over")
    model.load_state_dict(checkpoint["state_dict"])
    if ema is not None:
        ema.model.load_state_dict(checkpoint["ema_state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng_state"].cpu())
    return list(state["losses"])
