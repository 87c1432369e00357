"""Conditional flow matching: training targets and the Euler sampler with CFG-Zero*.

Convention (VoxCPM's UnifiedCFM): t = 1 is noise, t = 0 is data, y_t = (1 - t) x + t z and the
network predicts v = z - x, so sampling integrates x <- x - dt * v from t = 1 to 0.

The time grid is static for a given number of steps, so it is computed on the host once, in
float32 with the same operations as the reference (torch.linspace, the sway schedule, and the
running `t - dt` of its Euler loop), and enters the compiled sampler as constants.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

F32 = np.float32


def _torch_linspace_1_to_0(num: int) -> np.ndarray:
  """torch.linspace(1, 0, num) in float32: forward from 1 for the first half, back from 0 after."""
  step = F32(-1.0) / F32(num - 1)
  half = num // 2
  values = [F32(1.0) + step * F32(i) if i < half else F32(0.0) - step * F32(num - 1 - i) for i in range(num)]
  return np.asarray(values, F32)


def sway_time_grid(num_steps: int, sway_coef: float = 1.0) -> np.ndarray:
  """t_0 = 1 > ... > t_n = 0 with the sway schedule t + c (cos(pi t / 2) - 1 + t), float32."""
  t = _torch_linspace_1_to_0(num_steps + 1)
  angle = (F32(math.pi / 2) * t).astype(F32)
  cos = np.cos(angle.astype(np.float64)).astype(F32)  # correctly rounded, like torch.cos
  return (t + F32(sway_coef) * ((cos - F32(1.0)) + t)).astype(F32)


def euler_times(num_steps: int, sway_coef: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """The (t, dt) of each Euler step, float32 [num_steps] each, with the reference's running sums."""
  grid = sway_time_grid(num_steps, sway_coef)
  times, deltas = [], []
  t, dt = grid[0], F32(grid[0] - grid[1])
  for step in range(1, num_steps + 1):
    times.append(t)
    deltas.append(dt)
    t = F32(t - dt)
    if step < num_steps:
      dt = F32(t - grid[step + 1])
  return np.asarray(times, F32), np.asarray(deltas, F32)


def cfg_zero_star_skipped_steps(num_steps: int) -> int:
  """CFG-Zero* zero-initialises the first 4 % of the steps (at least one)."""
  return max(1, int((num_steps + 1) * 0.04))


def guided_velocity(v_cond: jax.Array, v_uncond: jax.Array, cfg_value: float | jax.Array,
                    use_cfg_zero_star: bool = True) -> jax.Array:
  """Classifier-free guidance; with CFG-Zero* the unconditional velocity is first rescaled by
  s* = <v_c, v_u> / (|v_u|^2 + 1e-8) per sample."""
  if use_cfg_zero_star:
    axes = tuple(range(1, v_cond.ndim))
    dot = jnp.sum(v_cond * v_uncond, axis=axes, keepdims=True)
    norm = jnp.sum(jnp.square(v_uncond), axis=axes, keepdims=True) + 1e-8
    v_uncond = v_uncond * (dot / norm)
  return v_uncond + cfg_value * (v_cond - v_uncond)


VelocityFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def euler_sample(velocity_fn: VelocityFn, z: jax.Array, num_steps: int, cfg_value: float | jax.Array,
                 use_cfg_zero_star: bool = True, sway_coef: float = 1.0) -> jax.Array:
  """Integrates from noise z (t = 1) to data (t = 0).

  Args:
    velocity_fn: (x, t) -> (conditional velocity, unconditional velocity), t a float32 scalar.
    z: initial noise [N, ...].
    num_steps: Euler steps (static).
    cfg_value: guidance scale.
  Returns:
    the sample, shaped like z.
  """
  times, deltas = euler_times(num_steps, sway_coef)
  # CFG-Zero*'s first steps use v = 0, which leaves x unchanged: skip them outright.
  start = cfg_zero_star_skipped_steps(num_steps) if use_cfg_zero_star else 0

  def step(x, t_dt):
    t, dt = t_dt
    v_cond, v_uncond = velocity_fn(x, t)
    return x - dt * guided_velocity(v_cond, v_uncond, cfg_value, use_cfg_zero_star), None

  x, _ = jax.lax.scan(step, z, (jnp.asarray(times[start:]), jnp.asarray(deltas[start:])))
  return x


# ------------------------------------------------------------------------------------------------
# Training


@dataclasses.dataclass(frozen=True)
class FlowMatchingConfig:
  """Training-time randomness of UnifiedCFM (log-normal t, conditioning dropout)."""

  condition_drop_rate: float = 0.1
  time_distribution: str = "log-norm"  # or "uniform"
  log_norm_mean: float = -0.4
  log_norm_std: float = 1.0


@struct.dataclass
class FlowNoise:
  """All random draws of one flow-matching loss evaluation, explicit so that it is reproducible.

  Attributes:
    keep_condition: [N] 1.0 where the conditioning is kept, 0.0 where it is dropped (CFG training).
    t: [N] flow times in (0, 1).
    z: Gaussian noise shaped like the targets.
  """

  keep_condition: jax.Array
  t: jax.Array
  z: jax.Array


def sample_flow_noise(key: jax.Array, target_shape: tuple[int, ...], config: FlowMatchingConfig,
                      dtype=jnp.float32) -> FlowNoise:
  n = target_shape[0]
  k_drop, k_t, k_z = jax.random.split(key, 3)
  keep = (jax.random.uniform(k_drop, (n,)) > config.condition_drop_rate).astype(dtype)
  if config.time_distribution == "log-norm":
    t = jax.nn.sigmoid(jax.random.normal(k_t, (n,), dtype) * config.log_norm_std + config.log_norm_mean)
  elif config.time_distribution == "uniform":
    t = jax.random.uniform(k_t, (n,), dtype)
  else:
    raise ValueError(f"unknown flow time distribution {config.time_distribution!r}")
  return FlowNoise(keep_condition=keep, t=t, z=jax.random.normal(k_z, target_shape, dtype))


def interpolate(x1: jax.Array, noise: FlowNoise) -> tuple[jax.Array, jax.Array]:
  """(y_t, target velocity): y_t = (1 - t) x1 + t z and v = z - x1."""
  t = noise.t.reshape((-1,) + (1,) * (x1.ndim - 1))
  return (1 - t) * x1 + t * noise.z, noise.z - x1
