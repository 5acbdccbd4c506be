"""course_lib: the reference library of the diffusion course (DDPM -> DDIM).

One concept per module; the names most notebooks need are re-exported here:

    from course_lib import make_schedule, add_noise, ddpm_sample, make_timesteps, ddim_sample

Notation follows DDPM (Ho et al. 2020) with 0-based timesteps t = 0, ..., T-1; the DDIM paper's
alpha_t is our alpha_bar. Model contract everywhere: model(x_t, t) -> eps_pred, t a LongTensor (B,).
"""
from course_lib.checkpoints import load_checkpoint, save_checkpoint
from course_lib.ddim import check_timesteps, ddim_invert, ddim_sample, ddim_sigma, ddim_step, make_timesteps, slerp
from course_lib.ddpm import ddpm_sample, ddpm_step, posterior_mean, posterior_variance, predict_x0
from course_lib.device import pick_device, set_cpu_threads
from course_lib.dpm_solver import dpm_solver_sample, dpm_solver_step
from course_lib.forward import add_noise, forward_chain, forward_step
from course_lib.mlp import MLPDenoiser
from course_lib.schedules import NoiseSchedule, make_schedule
from course_lib.train import EMA, diffusion_loss, train
from course_lib.unet import UNet

__all__ = [
    "NoiseSchedule", "make_schedule",
    "add_noise", "forward_step", "forward_chain",
    "predict_x0", "posterior_mean", "posterior_variance", "ddpm_step", "ddpm_sample",
    "make_timesteps", "check_timesteps", "ddim_sigma", "ddim_step", "ddim_sample", "ddim_invert", "slerp",
    "dpm_solver_step", "dpm_solver_sample",
    "UNet", "MLPDenoiser", "pick_device", "set_cpu_threads",
    "diffusion_loss", "EMA", "train", "save_checkpoint", "load_checkpoint",
]
