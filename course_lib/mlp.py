"""A small MLP eps_theta(x_t, t) for 2-D toy data (points of shape (B, 2)); trains in seconds on a CPU.

    [x_t, embed(t)] -> Linear, SiLU -> (num_layers - 1) x (Linear, SiLU) -> Linear -> eps_pred
"""
import torch
import torch.nn as nn

from course_lib.unet import check_model_inputs, timestep_embedding


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t) for points: x_t (B, data_dim) float, t (B,) long -> eps_pred (B, data_dim).

    The sinusoidal embedding of t (time_dim numbers) is concatenated to x_t. Defaults: about 38 k parameters.
    """

    def __init__(self, data_dim=2, hidden_dim=128, num_layers=3, time_dim=32):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be at least 1")
        self.data_dim = data_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.time_dim = time_dim
        layers = [nn.Linear(data_dim + time_dim, hidden_dim), nn.SiLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, data_dim))
        self.net = nn.Sequential(*layers)

    def config(self):
        """Constructor arguments as a plain dict: `MLPDenoiser(**model.config())` rebuilds the architecture."""
        return {"data_dim": self.data_dim, "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers, "time_dim": self.time_dim}

    def forward(self, x, t):
        """x: (B, data_dim) float, t: (B,) long with 0 <= t < T. Returns eps_pred (B, data_dim)."""
        check_model_inputs(x, t, 2, self.data_dim, "MLPDenoiser")
        emb = timestep_embedding(t, self.time_dim).to(x.dtype)  # (B, time_dim)
        return self.net(torch.cat([x, emb], dim=1))  # (B, data_dim + time_dim) -> (B, data_dim)
