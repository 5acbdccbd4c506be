"""Time our DDIM sampler against the same loop driven by diffusers' DDIMScheduler and the bare model calls.

A benchmark, not a test: it prints measured numbers. On one model and one x_T, it times, interleaved
and repeated (the median is reported):
  (a) course_lib.ddim.ddim_sample
  (b) the same S-step loop with diffusers.DDIMScheduler.step (set up to implement the paper)
  (c) the S bare model forwards alone
and prints the ratios a/b (target <= 1.0) and a/c (target <= 1.05).

    python benchmarks/bench_ddim.py --steps 50 --batch 16 --repeats 5
"""
import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler

from course_lib.ddim import ddim_sample, make_timesteps
from course_lib.device import pick_device
from course_lib.schedules import make_schedule
from course_lib.unet import UNet


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="S, the number of sampling steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the fastest available)")
    args = parser.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    model = UNet().to(device).eval()
    schedule = make_schedule("linear").to(device)
    pairs = make_timesteps(schedule.T, args.steps, "leading")
    x_T = torch.randn(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    scheduler.alphas_cumprod = schedule.alpha_bar.cpu().clone()  # the same table, as in the tests

    def ours():
        return ddim_sample(model, x_T, schedule, pairs, eta=args.eta, generator=torch.Generator().manual_seed(1),
                           progress=False)

    @torch.no_grad()
    def theirs():
        scheduler.set_timesteps(args.steps, device=device)
        g, x = torch.Generator().manual_seed(1), x_T
        for t in scheduler.timesteps:
            eps = model(x, torch.full((x.shape[0],), int(t), device=device, dtype=torch.long))
            x = scheduler.step(eps, t, x, eta=args.eta, generator=g).prev_sample
        return x

    @torch.no_grad()
    def bare():
        for t, _ in pairs:
            model(x_T, torch.full((x_T.shape[0],), t, device=device, dtype=torch.long))

    runs = {"ours": ours, "diffusers": theirs, "bare forwards": bare}
    for fn in runs.values():  # warm-up
        fn()
    times = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            seconds, outputs[name] = timed(fn, device)
            times[name].append(seconds)
    med = {name: statistics.median(ts) for name, ts in times.items()}

    print(f"device={device}  torch={torch.__version__}  threads={torch.get_num_threads()}  "
          f"UNet {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params  "
          f"batch={args.batch}  size={args.size}  S={args.steps}  eta={args.eta}  repeats={args.repeats}")
    for name, m in med.items():
        print(f"  {name:14s} median {m * 1000:9.1f} ms   ({m / args.steps * 1000:.2f} ms/step)")
    print(f"  ours / diffusers     = {med['ours'] / med['diffusers']:.3f}   (target <= 1.0)")
    print(f"  ours / bare forwards = {med['ours'] / med['bare forwards']:.3f}   (target <= 1.05)")
    diff = (outputs["ours"] - outputs["diffusers"]).abs().max().item()
    scale = outputs["diffusers"].abs().max().item()  # an untrained UNet's samples can be large
    print(f"  max |ours - diffusers| = {diff:.2e}  (max |x_0| = {scale:.2e}, relative {diff / max(scale, 1e-12):.1e})")


if __name__ == "__main__":
    main()
