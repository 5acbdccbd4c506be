"""Classifier-free guidance (Ho & Salimans 2022): a class-conditional eps-model steered towards its label.

Bayes' rule on scores, at every noise level t:  grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x).
Guidance with weight w scales the classifier term, grad log p_t(x) + w grad log p_t(y | x), and since
eps = -sqrt(1 - abar_t) * score, the same in eps terms needs no classifier at all:

    eps_w(x_t, t, y) = eps(x_t, t, null) + w * (eps(x_t, t, y) - eps(x_t, t, null))

w = 0 is the unconditional model, w = 1 the plain conditional one, w > 1 guided: samples pushed away from the
other classes, more recognisable and less diverse (notebook 09 measures both).
(Ho & Salimans write (1 + w') eps_cond - w' eps_uncond: their w' is our w - 1.)

`guided_model` returns an ordinary model(x_t, t) -> eps_pred, so every sampler of the course (ddpm_sample,
ddim_sample, dpm_solver_sample) samples with guidance unchanged: the sampler and the guidance are separate pieces.
"""
import torch


def guided_eps(eps_cond, eps_uncond, w):
    """eps_uncond + w (eps_cond - eps_uncond); tensors of one shape, w a float (0: unconditional, 1: conditional)."""
    return eps_uncond + w * (eps_cond - eps_uncond)


def guided_model(model, y, w):
    """A model(x_t, t) -> eps_pred that returns guided_eps for labels y, from a conditional model(x_t, t, y).

    model: a class-conditional UNet (num_classes set; label model.null_label means "no label").
    y: (B,) long labels in 0..num_classes - 1, one per row of the x_t the sampler will pass; w: float >= 0.
    Each call runs the model once on a batch of 2B (the B rows with y, the B rows with "no label");
    w = 0 and w = 1 need one half only and run B rows.
    """
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("guided_model needs a class-conditional model, e.g. UNet(..., num_classes=10); "
                         "this one has no labels")
    if not torch.is_tensor(y) or y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"y must be a LongTensor (B,) of class labels, got {y!r:.60}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y must hold classes 0..{num_classes - 1}; guided_model adds the 'no label' half itself")
    w = float(w)
    if not w >= 0:
        raise ValueError(f"w={w} must be >= 0: 0 is unconditional, 1 conditional, above 1 guided")

    def eps_model(x_t, t):
        if x_t.shape[0] != len(y):
            raise ValueError(f"x_t has {x_t.shape[0]} rows but y has {len(y)} labels; give one label per sample")
        labels = y.to(x_t.device)
        null = torch.full_like(labels, model.null_label)
        if w == 0.0:
            return model(x_t, t, null)
        if w == 1.0:
            return model(x_t, t, labels)
        eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))  # (2B, ...)
        eps_cond, eps_uncond = eps.chunk(2)  # each (B, ...)
        return guided_eps(eps_cond, eps_uncond, w)

    return eps_model
