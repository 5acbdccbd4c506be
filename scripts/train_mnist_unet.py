"""Train (or keep training) the course's shipped MNIST eps-model, resumably, within a time budget.

    python scripts/train_mnist_unet.py --steps 30000 --minutes 60

One command reproduces the checkpoint: it trains course_lib's UNet with course_lib's own loop
(L_simple, AdamW, EMA) on the shipped MNIST subset at 28x28, T = 1000 linear schedule, seed 0.
Progress is saved every --chunk steps to checkpoints/<name>.resume.pt (weights, EMA, optimizer, RNG:
a later call continues exactly where this one stopped), and after every chunk the EMA weights are
exported to course_lib/data/<name>.pt with a model card course_lib/data/<name>.md.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import torch

from course_lib.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from course_lib.ddim import ddim_sample, make_timesteps
from course_lib.mnist import load_mnist
from course_lib.plots import show_images
from course_lib.schedules import make_schedule
from course_lib.train import train
from course_lib.unet import UNet

ROOT = Path(__file__).resolve().parent.parent
MODEL = dict(in_channels=1, base_channels=24, channel_mults=(1, 2, 2), num_res_blocks=1, attn=True)
TRAIN = dict(batch_size=128, lr=5e-4, ema_decay=0.999, seed=0, grad_clip=1.0)


def write_card(path, name, meta, size, command):
    card = f"""# Model card: {name}

The course's pretrained MNIST eps-model: `model(x_t, t) -> eps_pred`, `course_lib.unet.UNet`.

| what | value |
| --- | --- |
| architecture | `UNet({", ".join(f"{k}={v}" for k, v in MODEL.items())})` |
| parameters | {meta["parameters"]:,} |
| data | the shipped MNIST subset, train split ({meta["train_examples"]:,} digits), {size}x{size}, in [-1, 1] |
| schedule | linear, T = 1000 (beta from 1e-4 to 0.02) |
| objective | L_simple (DDPM eq. 14), AdamW lr {TRAIN["lr"]}, batch {TRAIN["batch_size"]}, grad-norm clip {TRAIN["grad_clip"]} |
| weights | EMA, decay {TRAIN["ema_decay"]} |
| seed | {TRAIN["seed"]} |
| steps | {meta["steps"]:,} |
| final loss | {meta["loss_last_500"]:.4f} (mean of the last 500 steps) |
| wall time | {meta["wall_time_s"] / 3600:.2f} h of training in total, on {meta["machine"]} |

Reproduce (resumable; run again to continue): `{command}`.
Load: `model, schedule, meta = course_lib.load_checkpoint("course_lib/data/{name}.pt")`.
"""
    path.write_text(card)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30000, help="total optimizer steps to reach")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop (resumably) after about this long")
    parser.add_argument("--chunk", type=int, default=250, help="save and export every this many steps")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--name", default=None, help="default: mnist_unet<size>")
    args = parser.parse_args()
    name = args.name or f"mnist_unet{args.size}"
    resume = ROOT / "checkpoints" / f"{name}.resume.pt"
    export, card, log = (ROOT / "course_lib" / "data" / f"{name}.{ext}" for ext in ("pt", "md", "json"))
    resume.parent.mkdir(exist_ok=True)

    data, _ = load_mnist("train", source="shipped", size=args.size)
    schedule = make_schedule("linear", T=1000)
    history = json.loads(log.read_text()) if log.exists() else {"wall_time_s": 0.0}
    start = time.time()
    done = read_checkpoint(resume)["train_state"]["step"] if resume.exists() else 0
    while done < args.steps and time.time() - start < args.minutes * 60:
        chunk_start = time.time()
        model = UNet(**MODEL)
        target = min(done + args.chunk, args.steps)
        result = train(model, data, schedule, target, checkpoint_path=resume, checkpoint_every=args.chunk,
                       device="cpu" if not torch.cuda.is_available() else None, **TRAIN)
        done = len(result.losses)
        history["wall_time_s"] += time.time() - chunk_start
        meta = {"steps": done, "seed": TRAIN["seed"], "loss_last_500": sum(result.losses[-500:]) / len(result.losses[-500:]),
                "parameters": sum(p.numel() for p in model.parameters()), "train_examples": len(data),
                "wall_time_s": history["wall_time_s"], "size": args.size,
                "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
        save_checkpoint(export, result.ema_model, schedule, meta=meta)
        write_card(card, name, meta, args.size, f"python scripts/train_mnist_unet.py --size {args.size} --steps {args.steps}")
        log.write_text(json.dumps({**history, **meta}, indent=1))
        print(f"[train] {done} steps, loss {meta['loss_last_500']:.4f}, {history['wall_time_s'] / 60:.1f} min in total", flush=True)

    model, _, _ = load_checkpoint(export)
    x_T = torch.randn(64, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x0 = ddim_sample(model, x_T, schedule, make_timesteps(1000, 50, "linspace"), progress=False)
    ax = show_images(x0, nrow=8, title=f"{name}: DDIM, S = 50, eta = 0, {done} steps")
    ax.figure.savefig(ROOT / "course_lib" / "data" / f"{name}_samples.png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
