"""Rotary position embedding with MiniCPM's LongRoPE extension.

LongRoPE divides each rotary frequency by a per-dimension factor and scales cos/sin by a
single scaling factor. Which factor list applies is decided once per model, as in MiniCPM:
the long factors when the model's `max_position_embeddings` exceeds the
`original_max_position_embeddings` it was trained with, the short factors otherwise, and the
scaling factor is sqrt(1 + ln(max / original) / ln(original)) (1.0 when they are equal).

cos/sin are computed on the fly for the positions in use (no 32k-row table in memory) in
float32, in the same order of operations as the reference so that values agree to the ulp.
"""

from __future__ import annotations

import dataclasses
import math
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding settings. `short_factor`/`long_factor` of None mean plain RoPE."""

  theta: float = 10000.0
  max_position_embeddings: int = 32768
  original_max_position_embeddings: int | None = None
  short_factor: tuple[float, ...] | None = None
  long_factor: tuple[float, ...] | None = None

  def __post_init__(self):
    for name in ("short_factor", "long_factor"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(float(v) for v in value))

  @property
  def uses_long_factors(self) -> bool:
    original = self.original_max_position_embeddings
    return original is not None and self.max_position_embeddings > original

  @property
  def scaling_factor(self) -> float:
    original = self.original_max_position_embeddings
    if original is None or self.short_factor is None:
      return 1.0
    scale = self.max_position_embeddings / original
    return math.sqrt(1.0 + math.log(scale) / math.log(original))

  def extension_factors(self, head_dim: int) -> np.ndarray:
    """The per-frequency divisors in use, float32 [head_dim // 2]."""
    factors = self.long_factor if self.uses_long_factors else self.short_factor
    if factors is None:
      return np.ones(head_dim // 2, np.float32)
    if len(factors) != head_dim // 2:
      raise ValueError(
          f"LongRoPE needs head_dim/2 = {head_dim // 2} factors, the config has {len(factors)}; "
          "the factors of `rope_scaling` must match the attention head size of every transformer "
          "that inherits them.")
    return np.asarray(factors, np.float32)


def inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
  """1 / theta^(2i/d) for i < d/2, computed exactly and rounded once to float32."""
  exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  return (1.0 / (np.float64(theta) ** exponents.astype(np.float64))).astype(np.float32)


def rope_cos_sin(positions: jax.Array, head_dim: int, config: RopeConfig) -> tuple[jax.Array, jax.Array]:
  """cos and sin for integer `positions` [...], each float32 [..., head_dim].

  Halves are duplicated (`cat(freqs, freqs)`), the rotate-half convention.
  """
  inv_ext = (np.float32(1.0) / config.extension_factors(head_dim)).astype(np.float32)
  inv_freq = inverse_frequencies(head_dim, config.theta)
  freqs = (positions.astype(jnp.float32)[..., None] * inv_ext) * inv_freq
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  scale = np.float32(config.scaling_factor)
  return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, T, heads, head_dim] by cos/sin [B or 1, T, head_dim] in float32."""
  x32 = x.astype(jnp.float32)
  cos = cos[:, :, None, :]
  sin = sin[:, :, None, :]
  return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
