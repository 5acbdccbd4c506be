"""Train (or keep training) the course's shipped MNIST eps-models, resumably, within a time budget.

One command reproduces a checkpoint: it trains course_lib's UNet with course_lib's own loop (L_simple, AdamW,
EMA) at 28x28, T = 1000 linear schedule. Progress is saved every --chunk steps to checkpoints/<name>.resume.pt
(weights, EMA, optimizer, RNG: a later call continues exactly where this one stopped), and after every chunk the
EMA weights are exported to course_lib/data/<name>.pt with a model card course_lib/data/<name>.md.

The shipped unconditional model, mnist_unet28 (base_channels 40, on the 20,000 digits of
course_lib.mnist.load_train20k), is reproduced, over several sessions on a CPU, by

    python scripts/train_mnist_unet.py --base-channels 40 --data train20k --steps 24000 --lr-decay 16000 24000 \
        --minutes 100

To train further without touching the shipped files, start a new name from the shipped weights, with its own
learning-rate schedule (the shipped run's decayed to 0 at its last step):

    python scripts/train_mnist_unet.py --name mnist_unet28_cont --init-from course_lib/data/mnist_unet28.pt \
        --base-channels 40 --data train20k --steps 12000 --lr 2e-4 --lr-decay 2000 12000

which exports course_lib/data/mnist_unet28_cont.{pt,md,json} and its sample figure; mnist_unet28.* stay as they are.
(--export-name NAME instead copies checkpoints/<name>.resume.pt once and continues the copy exactly where it stopped,
schedule included; pass the same --base-channels and --data as the run it continues.) --precision picks fp32 or
bf16 autocast (default: auto).

The class-conditional model of lecture 09 (classifier-free guidance) is trained by the same loop:

    python scripts/train_mnist_unet.py --conditional --base-channels 40 --data train20k --steps 6000 \
        --lr-decay 2000 6000

builds UNet(..., num_classes=10), starts it from the shipped unconditional weights (the "no label" row of its label
embedding starts at zero, so step 0 without a label is exactly mnist_unet28), fine-tunes with label dropout (p_uncond)
and exports course_lib/data/mnist_cfg_unet28.{pt,md,json} with a figure of guided samples, ten of each digit.
"""
import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from course_lib.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from course_lib.ddim import ddim_sample, make_timesteps
from course_lib.guidance import guided_model
from course_lib.mnist import load_mnist, load_train20k
from course_lib.plots import show_images
from course_lib.schedules import make_schedule
from course_lib.train import train
from course_lib.unet import LABEL_INIT_STD, UNet

ROOT = Path(__file__).resolve().parent.parent
MODEL = dict(in_channels=1, base_channels=24, channel_mults=(1, 2, 2), num_res_blocks=1, attn=True)
TRAIN = dict(batch_size=128, lr=5e-4, ema_decay=0.999, seed=0, grad_clip=1.0)
COND_TRAIN = dict(TRAIN, lr=2e-4, p_uncond=0.2)  # fine-tuning from the unconditional weights: a smaller lr
UNCONDITIONAL = "course_lib/data/mnist_unet28.pt"
GUIDANCE_W = 3.0  # the guidance weight of the conditional model's sample figure


def machine_words():
    """Where this process trains, for the card: "NVIDIA H200 GPU, torch 2.11.0" or "x86_64 CPU, torch 2.13.0+cpu"."""
    where = f"{torch.cuda.get_device_name()} GPU" if torch.cuda.is_available() else f"{platform.machine()} CPU"
    return f"{where}, torch {torch.__version__}"


def describe_precision(precision_steps):
    """The card's precision row, e.g. "float32 for 8,000 steps, then bfloat16 autocast (...) for 2,000 steps"."""
    words = {"fp32": "float32", "bf16": "bfloat16 autocast (forward only; loss, weights, AdamW in float32)"}
    parts = [f"{words[p]} for {n:,} steps" for p, n in precision_steps.items() if n]
    return ", then ".join(parts)


def lr_words(meta):
    decay = meta.get("lr_decay")
    return f" (half-cosine decay to 0 from step {decay[0]:,} to {decay[1]:,})" if decay else " (constant)"


DATA_WORDS = {
    "subset": "the shipped MNIST subset, train split ({n:,} digits{labels})",
    "train20k": "{n:,} MNIST digits, 2,000 of each class{labels}: the shipped subset's 4,500 train digits and the "
                "15,500 of `mnist_extra.npz` (`course_lib.mnist.load_train20k`)",
}


def start_words(init_from, conditional):
    """The card's 'initial weights' row: the checkpoint, its sha256 and, from the JSON log beside it, its training."""
    path = ROOT / init_from
    words = f"`{init_from}` (EMA, sha256 `{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}`"
    log = path.with_suffix(".json")
    if log.exists():
        before = json.loads(log.read_text())
        words += f": {before['steps']:,} steps on {before['train_examples']:,} digits, {before['wall_time_s'] / 3600:.2f} h"
    words += "); fresh AdamW and EMA"
    if conditional:
        words += f"; label embedding: \"no label\" row zero, class rows random (std {LABEL_INIT_STD})"
    return f"| initial weights | {words} |\n"


def write_card(path, name, meta, size, command, model_args, train_args, conditional, init_from, data):
    what = ("The course's class-conditional MNIST eps-model: `model(x_t, t, y) -> eps_pred`, `course_lib.unet.UNet` "
            "with a label embedding; `y = model.null_label` (10) is \"no label\". Sample with classifier-free "
            "guidance through `course_lib.guidance.guided_model(model, y, w)`."
            if conditional else
            "The course's pretrained MNIST eps-model: `model(x_t, t) -> eps_pred`, `course_lib.unet.UNet`.")
    objective = "L_simple (DDPM eq. 14)"
    if conditional:
        objective += f" with label dropout (a label becomes \"no label\" with probability {train_args['p_uncond']})"
    data_words = DATA_WORDS[data].format(n=meta["train_examples"], labels=" and their labels" if conditional else "")
    start = "" if init_from is None else start_words(init_from, conditional)
    card = f"""# Model card: {name}

{what}

| what | value |
| --- | --- |
| architecture | `UNet({", ".join(f"{k}={v}" for k, v in model_args.items())})` |
| parameters | {meta["parameters"]:,} |
| data | {data_words}, {size}x{size}, in [-1, 1] |
| schedule | linear, T = 1000 (beta from 1e-4 to 0.02) |
{start}| objective | {objective}, AdamW lr {train_args["lr"]}{lr_words(meta)}, batch {train_args["batch_size"]}, grad-norm clip {train_args["grad_clip"]} |
| weights | EMA, decay {train_args["ema_decay"]} |
| seed | {train_args["seed"]} |
| steps | {meta["steps"]:,}{" from the initial weights" if init_from else ""} |
| precision | {describe_precision(meta["precision_steps"])} |
| final loss | {meta["loss_last_500"]:.4f} (mean of the last 500 steps) |
| wall time | {meta["wall_time_s"] / 3600:.2f} h of training{" from the initial weights" if init_from else " in total"}, on {meta["machine"]} |

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
    parser.add_argument("--export-name", default=None,
                        help="continue a copy of <name>'s resume state and export under this name instead, "
                             "leaving <name>'s files untouched")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 autocast where the CPU/GPU is fast at it, else fp32")
    parser.add_argument("--lr-decay", type=int, nargs=2, metavar=("START", "END"), default=None,
                        help="half-cosine lr decay from step START to 0 at step END (keep passing it on resume)")
    parser.add_argument("--data", default="subset", choices=["subset", "train20k"],
                        help="subset: the shipped subset's 4,500 train digits; train20k: those and the 15,500 of "
                             "mnist_extra.npz (course_lib.mnist.load_train20k)")
    parser.add_argument("--init-from", default=None, metavar="PATH",
                        help="start from this checkpoint's (EMA) weights with a fresh optimizer; the conditional "
                             f"model's default is {UNCONDITIONAL}")
    parser.add_argument("--base-channels", type=int, default=MODEL["base_channels"],
                        help=f"the UNet's width (default {MODEL['base_channels']}; the shipped models use 40)")
    parser.add_argument("--lr", type=float, default=None, help=f"default {TRAIN['lr']} ({COND_TRAIN['lr']} conditional)")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--conditional", action="store_true",
                        help="the class-conditional model (default name mnist_cfg_unet<size>), started from the "
                             "unconditional mnist_unet<size>.pt and trained with label dropout")
    args = parser.parse_args()
    source = args.name or (f"mnist_cfg_unet{args.size}" if args.conditional else f"mnist_unet{args.size}")
    model_args = dict(MODEL, base_channels=args.base_channels)
    if args.conditional:
        model_args["num_classes"] = 10
    train_args = dict(COND_TRAIN if args.conditional else TRAIN)
    train_args.update({k: v for k, v in (("lr", args.lr), ("seed", args.seed)) if v is not None})
    init_from = args.init_from or (UNCONDITIONAL if args.conditional else None)
    name = args.export_name or source
    resume = ROOT / "checkpoints" / f"{name}.resume.pt"
    export, card, log = (ROOT / "course_lib" / "data" / f"{name}.{ext}" for ext in ("pt", "md", "json"))
    resume.parent.mkdir(exist_ok=True)
    if name != source and not resume.exists():  # start the new name from a copy of the source's state
        source_resume = ROOT / "checkpoints" / f"{source}.resume.pt"
        source_log = ROOT / "course_lib" / "data" / f"{source}.json"
        if source_resume.exists():
            shutil.copyfile(source_resume, resume)
            print(f"[train] copied {source_resume.relative_to(ROOT)} to {resume.relative_to(ROOT)}", flush=True)
            if source_log.exists() and not log.exists():
                shutil.copyfile(source_log, log)  # carry the wall time and step history over

    data, labels = (load_train20k(size=args.size) if args.data == "train20k" else
                    load_mnist("train", source="shipped", size=args.size))
    schedule = make_schedule("linear", T=1000)
    history = json.loads(log.read_text()) if log.exists() else {"wall_time_s": 0.0}
    # steps per precision; a log from before this field existed was trained in float32
    precision_steps = history.get("precision_steps", {"fp32": history.get("steps", 0)})
    command = f"python scripts/train_mnist_unet.py --size {args.size} --steps {args.steps}"
    command += f" --name {args.name}" if args.name else ""
    command += " --conditional" if args.conditional else ""
    command += f" --base-channels {args.base_channels}" if args.base_channels != MODEL["base_channels"] else ""
    command += f" --data {args.data}" if args.data != "subset" else ""
    command += f" --init-from {args.init_from}" if args.init_from else ""
    command += f" --lr {args.lr:g}" if args.lr is not None else ""
    command += f" --seed {args.seed}" if args.seed is not None else ""
    command += f" --export-name {name}" if name != source else ""
    command += f" --precision {args.precision}" if args.precision != "auto" else ""
    command += f" --lr-decay {args.lr_decay[0]} {args.lr_decay[1]}" if args.lr_decay else ""
    start = time.time()
    done = read_checkpoint(resume)["train_state"]["step"] if resume.exists() else 0
    first = True  # one pass even when the resume state is complete, so its export and card are (re)written
    while first or (done < args.steps and time.time() - start < args.minutes * 60):
        first, chunk_start = False, time.time()
        model = UNet(**model_args)
        if init_from is not None and not resume.exists():  # step 0: the weights of init_from
            start_model, _, _ = load_checkpoint(ROOT / init_from)
            missing, unexpected = model.load_state_dict(start_model.state_dict(), strict=False)
            if missing != (["label_emb.weight"] if args.conditional else []) or unexpected:
                raise ValueError(f"{init_from} does not fit {model_args}: missing {missing}, unexpected {unexpected}")
            print(f"[train] started from {init_from}"
                  + ("; the 'no label' embedding starts at zero" if args.conditional else ""), flush=True)
        target = min(done + args.chunk, args.steps)
        result = train(model, data, schedule, target, checkpoint_path=resume, checkpoint_every=args.chunk,
                       device="cpu" if not torch.cuda.is_available() else None, precision=args.precision,
                       progress=sys.stderr.isatty(), lr_decay=args.lr_decay,
                       labels=labels if args.conditional else None, **train_args)
        trained = len(result.losses) - done  # 0 in a pass that only re-exports a finished run
        precision_steps[result.precision] = precision_steps.get(result.precision, 0) + trained
        done = len(result.losses)
        if trained:  # a re-export keeps the wall time and the machine of the steps it did not train
            history["wall_time_s"] += time.time() - chunk_start
            here, before = machine_words(), history.get("machine")
            history["machine"] = here if before in (None, here) or before.endswith(f"then {here}") else (
                f"{before}, then {here}")
        meta = {"steps": done, "lr_decay": args.lr_decay, "seed": train_args["seed"], "loss_last_500": sum(result.losses[-500:]) / len(result.losses[-500:]),
                "parameters": sum(p.numel() for p in model.parameters()), "train_examples": len(data),
                "wall_time_s": history["wall_time_s"], "size": args.size, "precision_steps": precision_steps,
                "machine": history.get("machine", machine_words())}
        if init_from is not None:
            meta["init_from"] = init_from
            meta["init_sha256"] = hashlib.sha256((ROOT / init_from).read_bytes()).hexdigest()
        meta["data"] = args.data
        save_checkpoint(export, result.ema_model, schedule, meta=meta)
        write_card(card, name, meta, args.size, command, model_args, train_args, args.conditional, init_from,
                   args.data)
        log.write_text(json.dumps({**history, **meta}, indent=1))
        print(f"[train] {done} steps ({result.precision}), loss {meta['loss_last_500']:.4f}, "
              f"{time.time() - chunk_start:.0f} s this chunk, {history['wall_time_s'] / 60:.1f} min in total",
              flush=True)

    model, _, _ = load_checkpoint(export)
    n, title = 64, f"{name} after {done:,} training steps: DDIM samples, S = 50, eta = 0"
    if args.conditional:  # ten of each digit, one digit per row, guided
        n, title = 100, title + f", guidance w = {GUIDANCE_W:g}, one digit per row"
        model = guided_model(model, torch.arange(10).repeat_interleave(10), GUIDANCE_W)
    x_T = torch.randn(n, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x0 = ddim_sample(model, x_T, schedule, make_timesteps(1000, 50, "linspace"), progress=False)
    ax = show_images(x0, nrow=10 if args.conditional else 8, title=title)
    ax.figure.savefig(ROOT / "course_lib" / "data" / f"{name}_samples.png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
