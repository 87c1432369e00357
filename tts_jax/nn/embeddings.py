"""Sinusoidal embeddings of continuous values (diffusion / flow time)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_frequencies(dim: int) -> np.ndarray:
  """exp(-i ln(10000) / (dim/2 - 1)) for i < dim/2, float32 (computed exactly, rounded once)."""
  if dim % 2 or dim < 4:
    raise ValueError(f"sinusoidal embedding needs an even dim >= 4, got {dim}")
  half = dim // 2
  exponent = np.arange(half, dtype=np.float32) * np.float32(-math.log(10000) / (half - 1))
  return np.exp(exponent.astype(np.float64)).astype(np.float32)


def sinusoidal_embedding(t: jax.Array, dim: int, scale: float = 1000.0) -> jax.Array:
  """[sin(scale t f), cos(scale t f)] for t [N], float32 [N, dim] (sin half first)."""
  angles = (scale * t.astype(jnp.float32))[:, None] * sinusoidal_frequencies(dim)[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
