"""Finite scalar quantisation of values in [-1, 1] to a uniform grid of 2 * scale + 1 levels."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def scalar_quantize(x: jax.Array, scale: float, *, straight_through: bool) -> jax.Array:
  """Rounds x * scale to the nearest integer (halves to even, as torch.round) and divides back.

  With `straight_through` the forward value is the quantised one while the gradient is the
  identity (`x + stop_gradient(q - x)`); written exactly so, the forward value rounds like the
  reference's training mode.
  """
  quantized = jnp.round(x * scale) / scale
  if straight_through:
    return x + jax.lax.stop_gradient(quantized - x)
  return quantized
