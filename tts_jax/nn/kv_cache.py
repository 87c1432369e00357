"""Static key/value cache: fixed shapes, so decoding compiles once per (batch, length) bucket."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
  """Keys and values of every layer.

  Attributes:
    k, v: [layers, batch, max_length, kv_heads, head_dim]. Position i of the sequence lives at
      index i; validity is tracked by the caller (the decode index and optional padding mask).
  """

  k: jax.Array
  v: jax.Array

  @property
  def max_length(self) -> int:
    return self.k.shape[2]

  @classmethod
  def zeros(cls, num_layers: int, batch: int, max_length: int, num_kv_heads: int, head_dim: int,
            dtype=jnp.float32) -> "KVCache":
    shape = (num_layers, batch, max_length, num_kv_heads, head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

  def write_prefix(self, k: jax.Array, v: jax.Array) -> "KVCache":
    """Stores k, v [layers, batch, T, kv_heads, head_dim] at positions 0..T-1."""
    if k.shape[2] > self.max_length:
      raise ValueError(f"prompt of {k.shape[2]} positions does not fit a KV cache of {self.max_length}")
    start = (0, 0, 0, 0, 0)
    return KVCache(
        k=jax.lax.dynamic_update_slice(self.k, k.astype(self.k.dtype), start),
        v=jax.lax.dynamic_update_slice(self.v, v.astype(self.v.dtype), start),
    )
