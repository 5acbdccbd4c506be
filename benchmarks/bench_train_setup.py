"""Time one training step of the shipped MNIST eps-model in four set-ups, to pick the fastest on this machine.

A benchmark, not a test: it prints measured numbers. One step is what course_lib.train does per step
(L_simple forward, backward, grad-norm clip, AdamW, EMA update) with scripts/train_mnist_unet.py's MODEL
and TRAIN, on random batches of 28x28 digits. The set-ups:
  fp32             plain float32, NCHW
  channels_last    float32, model and inputs in channels_last memory format
  bf16             torch.autocast(device, dtype=torch.bfloat16) around the model forward, loss in float32
  channels_last+bf16
Each set-up warms up, then is timed for --steps steps; the rounds are interleaved (median per step reported).

    python benchmarks/bench_train_setup.py --steps 15 --rounds 2
    python benchmarks/bench_train_setup.py --setups channels_last     # fp32 against channels_last only

Measured on a quiet 2-core Intel Xeon with AMX (amx_bf16, avx512_bf16), torch 2.13 CPU, batch 128, 2 threads:
  fp32 0.516 s/step, channels_last 0.390, bf16 0.235, channels_last+bf16 0.324 (medians of 30 steps each):
  bf16 autocast is 2.2x faster than fp32 and beats channels_last with or without bf16.
  (A 2-D MLPDenoiser at batch 512 is the other way round: 2.4 ms/step in fp32, 2.8 ms under bf16.)
  (These were the base_channels=24 UNet shipped then; the base-40 one takes 0.43 s/step under bf16 there.)

Measured on a quiet 2-core AMD EPYC without AVX-512 (torch reports AVX2), torch 2.13 CPU, the shipped base-40 UNet:
  all four set-ups (--steps 10 --rounds 2): fp32 1.05 s/step, channels_last 0.91, bf16 9.74, channels_last+bf16 9.17;
  fp32 and channels_last alone (--steps 15 --rounds 3 --setups channels_last): 0.62 and 0.59 s/step.
  bf16 autocast is emulated there and 9x slower than fp32, so course_lib.train's precision="auto" picks fp32
  (cpu_has_fast_bf16() is False); channels_last gained 15 % beside the bf16 runs and 5 % alone, not worth a
  second code path.
"""
import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_mnist_unet import MODEL, TRAIN  # noqa: E402  (the shipped configuration)

from course_lib.forward import add_noise  # noqa: E402
from course_lib.schedules import make_schedule  # noqa: E402
from course_lib.train import EMA  # noqa: E402
from course_lib.unet import UNet  # noqa: E402

SETUPS = {"fp32": (False, False), "channels_last": (True, False), "bf16": (False, True),
          "channels_last+bf16": (True, True)}  # name: (channels_last, bf16 autocast)


def make_step(channels_last, bf16, size, device):
    """Build a fresh model, optimizer and EMA; return a function doing one full training step."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = UNet(**MODEL).to(device, memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=0.0)
    ema = EMA(model, TRAIN["ema_decay"])
    schedule = make_schedule("linear", T=1000).to(device)
    batch = TRAIN["batch_size"]

    def step():
        x0 = (torch.rand(batch, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
        t = torch.randint(0, schedule.T, (batch,), device=device)
        eps = torch.randn_like(x0)
        x_t = add_noise(x0, t, eps, schedule)
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with amp:
            eps_pred = model(x_t, t)
        loss = F.mse_loss(eps_pred.float(), eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN["grad_clip"])
        optimizer.step()
        ema.update(model)
        return loss.item()  # .item() synchronizes on CUDA too

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per set-up and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all set-ups")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS),
                        help="time only these (fp32 is always timed: it is the baseline)")
    args = parser.parse_args()

    device = torch.device(args.device)
    caps = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {device.type} ({caps}), {torch.get_num_threads()} threads, "
          f"batch {TRAIN['batch_size']}, {args.size}x{args.size}")
    names = ["fp32"] + [name for name in args.setups if name != "fp32"]
    steps = {name: make_step(*SETUPS[name], args.size, device) for name in names}
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(args.warmup):
                step()
            for _ in range(args.steps):
                start = time.perf_counter()
                loss = step()
                times[name].append(time.perf_counter() - start)
            assert loss == loss, f"{name}: loss is NaN"
    base = statistics.median(times["fp32"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>20}: {med:.3f} s/step median ({statistics.mean(ts):.3f} mean, {len(ts)} steps), "
              f"{base / med:.2f}x fp32")


if __name__ == "__main__":
    main()
