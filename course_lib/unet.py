"""A small UNet eps_theta(x_t, t) for 1-channel images of 16x16, 28x28 or 32x32 pixels.

The design follows DDPM (Ho et al. 2020, appendix B), scaled down to train on a laptop:
    x_t -> conv_in -> [ResBlocks, downsample] per level -> ResBlock, attention, ResBlock
        -> [concat skip, ResBlocks, upsample] per level -> GroupNorm, SiLU, conv_out -> eps_pred
Every ResBlock adds an embedding of t, so one network denoises at every noise level.
Self-attention runs only at the lowest resolution, where it is cheap (7x7 for 28x28 inputs).
Upsampling resizes to the size of the matching skip, so odd sizes (28 -> 14 -> 7 -> 4 -> 7) work.

With num_classes set, the UNet is class-conditional, eps_theta(x_t, t, y): an embedding of the label y is added
to the time embedding (Ho & Salimans 2022). Label num_classes is the "no label" token, so one network gives both
the conditional and the unconditional eps that classifier-free guidance combines (course_lib/guidance.py).
The "no label" row of the embedding starts at zero, so with y = null a fresh conditional UNet computes exactly what
the unconditional one does (and can be started from its weights); the class rows start random (std LABEL_INIT_STD),
so the network tells the labels apart from the first step.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_GROUPS = 8  # GroupNorm groups; every channel count is a multiple of 8
LABEL_INIT_STD = 0.5  # class rows of the label embedding; the time embedding's entries are of order 0.3 to 1


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of timesteps (Transformer positional encoding, as in DDPM).

    t: (B,) integer timesteps; dim: even embedding size. Returns (B, dim) float32,
    [sin(t * w_0), ..., sin(t * w_{dim/2-1}), cos(t * w_0), ...] with w_i = max_period^(-i / (dim/2)).
    """
    if dim % 2 != 0:
        raise ValueError(f"timestep_embedding needs an even dim, got dim={dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)  # (dim/2,)
    args = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, dim)


def check_model_inputs(x, t, ndim, channels, name):
    """Teaching errors for the contract model(x_t, t): x_t (B, ...) float, t a LongTensor (B,)."""
    if x.dim() != ndim or x.shape[1] != channels:
        want = f"(B, {channels}, H, W)" if ndim == 4 else f"(B, {channels})"
        raise ValueError(f"{name} expects x_t of shape {want}, got {tuple(x.shape)}")
    if not torch.is_tensor(t) or t.shape != (x.shape[0],):
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"{name} expects t as a LongTensor of shape (B,) = ({x.shape[0]},), got {got}; "
                         f"for one timestep use torch.full((B,), t, dtype=torch.long)")
    if t.is_floating_point():
        raise ValueError(f"{name} expects integer timesteps 0 <= t < T (dtype torch.long), got {t.dtype}; "
                         f"pass t itself, not t / T")


def check_labels(y, batch, num_classes, name):
    """Teaching errors for the label argument of a conditional model: y a LongTensor (B,) in 0..num_classes."""
    if not torch.is_tensor(y) or y.shape != (batch,) or y.is_floating_point():
        got = f"{tuple(y.shape)} {y.dtype}" if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"{name} expects labels y as a LongTensor of shape (B,) = ({batch},), got {got}; "
                         f"for one class use torch.full((B,), c, dtype=torch.long)")
    if len(y) and (y.min() < 0 or y.max() > num_classes):
        raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}, or be {num_classes} (= null_label, "
                         f"'no label'); got values from {y.min().item()} to {y.max().item()}")


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the time embedding; GroupNorm, SiLU, conv; plus a residual path."""

    def __init__(self, in_ch, out_ch, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(NUM_GROUPS, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(NUM_GROUPS, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        """x: (B, in_ch, H, W), emb: (B, emb_dim) -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, out_ch, 1, 1) broadcast over H, W
        h = self.conv2(F.silu(self.norm2(h)))  # (B, out_ch, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions of a feature map, with a residual path."""

    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(NUM_GROUPS, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        """x: (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).view(B, 3, C, H * W)  # (B, 3, C, HW)
        q, k, v = qkv.transpose(2, 3).unbind(1)  # each (B, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), softmax(q k^T / sqrt(C)) v
        h = h.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj(h)


class UNet(nn.Module):
    """eps_theta(x_t, t) for images: x_t (B, in_channels, H, W) float, t (B,) long -> eps_pred, shape of x_t.

    Level i works at resolution H / 2^i with base_channels * channel_mults[i] channels.
    The defaults (1.27 M parameters) fit 16x16, 28x28 and 32x32 inputs. On a 2-core CPU one training step
    at batch 128 takes about 0.9 s (16x16) to 2.2 s (28x28): train on a GPU, or load a shipped checkpoint.
    """

    def __init__(self, in_channels=1, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, attn=True,
                 num_classes=None):
        super().__init__()
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes={num_classes!r} must be None (unconditional) or an int >= 1")
        if base_channels % NUM_GROUPS != 0:
            raise ValueError(f"base_channels={base_channels} must be a multiple of {NUM_GROUPS} (GroupNorm groups)")
        if len(channel_mults) < 1 or num_res_blocks < 1:
            raise ValueError("UNet needs at least one level (channel_mults) and num_res_blocks >= 1")
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.channel_mults = tuple(channel_mults)
        self.num_res_blocks = num_res_blocks
        self.attn = attn
        self.num_classes = num_classes

        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:  # one row per class plus the "no label" row, index num_classes
            self.label_emb = nn.Embedding(num_classes + 1, emb_dim)
            with torch.no_grad():
                nn.init.normal_(self.label_emb.weight, std=LABEL_INIT_STD)
                self.label_emb.weight[num_classes].zero_()  # "no label" adds nothing: the unconditional model
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Down path: level i keeps one skip per ResBlock output, then halves the resolution.
        level_chs = [base_channels * m for m in self.channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base_channels
        for i, out_ch in enumerate(level_chs):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, out_ch, emb_dim))
                ch = out_ch
            self.down.append(blocks)
            if i < len(level_chs) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))

        # Middle, at the lowest resolution: the only place with attention.
        self.mid1 = ResBlock(ch, ch, emb_dim)
        self.mid_attn = SelfAttention(ch) if attn else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim)

        # Up path, lowest resolution first: each ResBlock eats one skip (concatenated on channels).
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, out_ch in reversed(list(enumerate(level_chs))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch + out_ch, out_ch, emb_dim))
                ch = out_ch
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))

        self.norm_out = nn.GroupNorm(NUM_GROUPS, ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)

    def config(self):
        """Constructor arguments as a plain dict: `UNet(**model.config())` rebuilds the architecture."""
        config = {"in_channels": self.in_channels, "base_channels": self.base_channels,
                  "channel_mults": self.channel_mults, "num_res_blocks": self.num_res_blocks, "attn": self.attn}
        if self.num_classes is not None:  # only then, so unconditional checkpoints keep their config
            config["num_classes"] = self.num_classes
        return config

    @property
    def null_label(self):
        """The "no label" token, num_classes: model(x_t, t, y=null) is the unconditional eps."""
        if self.num_classes is None:
            raise ValueError("this UNet is unconditional (num_classes=None): it has no labels")
        return self.num_classes

    def forward(self, x, t, y=None):
        """x: (B, in_channels, H, W) float, t: (B,) long with 0 <= t < T. Returns eps_pred (B, in_channels, H, W).

        y: (B,) long labels in 0..num_classes - 1, or num_classes for "no label", for a conditional UNet
        (None means no label for every row); an unconditional UNet takes no y.
        """
        check_model_inputs(x, t, 4, self.in_channels, "UNet")
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))  # (B, 4 * base_channels)
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None) and takes no labels y; "
                                 "build UNet(..., num_classes=10) for a class-conditional model")
        else:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            check_labels(y, x.shape[0], self.num_classes, "UNet")
            emb = emb + self.label_emb(y)  # (B, 4 * base_channels): the label shifts every ResBlock's input

        h = self.conv_in(x)  # (B, base_channels, H, W)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)  # (B, C_i, H_i, W_i)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, C_i, ceil(H_i / 2), ceil(W_i / 2))

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, C_last, H_last, W_last)

        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C + C_skip, H_i, W_i) -> (B, C_i, H_i, W_i)
            if i < len(self.upsample):
                size = skips[-1].shape[-2:]  # the next level's resolution, e.g. 7 -> 14 (never 7 -> 8 -> 16)
                h = self.upsample[i](F.interpolate(h, size=size, mode="nearest"))  # (B, C_i, H_{i-1}, W_{i-1})

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, in_channels, H, W)
