"""RMSNorm with the variance computed in float32 (MiniCPM / LLaMA convention)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.params import constant_init, param


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """Normalises in float32, casts back to the input dtype, then scales by `weight`.

  The cast happens before the multiplication by `weight`, as in the reference, so bf16 models
  round at the same place.
  """
  x32 = x.astype(jnp.float32)
  variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
  return (x32 * jax.lax.rsqrt(variance + eps)).astype(x.dtype) * weight


class RMSNorm(nnx.Module):

  def __init__(self, features: int, *, eps: float = 1e-6, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.eps = eps
    self.weight = param(rngs.params(), constant_init(1.0), (features,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.weight[...], self.eps)
