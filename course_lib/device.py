"""Pick the fastest available device: CUDA, then Apple's MPS, then the CPU."""
import torch


def pick_device(prefer=None):
    """Return a torch.device: `prefer` if given (e.g. "cpu"), else cuda, mps or cpu, in that order.

    Asking for a device that is not available raises a ValueError instead of failing later.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for, but torch.backends.mps.is_available() is False")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def randn(shape, generator=None, device=None, dtype=torch.float32):
    """Standard normal noise drawn on the generator's device, then moved to `device`.

    A CPU generator therefore gives the same numbers whether the model runs on cpu, cuda or mps.
    """
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
