"""Grouped-query self-attention (bias-free q/k/v/o), the MiniCPM-4 / LLaMA form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.dense import Dense
from tts_jax.nn.rope import apply_rope

_MASKED = -1e30  # finite, so that a fully masked row gives a uniform (not NaN) distribution


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Softmax attention with grouped key/value heads.

  Args:
    q: queries [B, T, H, D].
    k, v: keys and values [B, S, K, D] with K dividing H; query head h reads kv head h // (H/K),
      the layout of PyTorch's `enable_gqa`.
    mask: boolean, True where a query may attend, broadcastable to [B, T, S]; None for full.
  Returns:
    [B, T, H, D] in the dtype of v. Logits and softmax are float32.
  """
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, t, kv_heads, h // kv_heads, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  logits = logits * (1.0 / jnp.sqrt(jnp.float32(d)))
  if mask is not None:
    mask = jnp.broadcast_to(mask, (b, t, k.shape[1]))
    logits = jnp.where(mask[:, None, None, :, :], logits, _MASKED)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(v.dtype)


class Attention(nnx.Module):
  """q/k/v/o projections; heads * head_dim may differ from the model width (`kv_channels`)."""

  def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    if num_heads % num_kv_heads:
      raise ValueError(f"num_heads={num_heads} must be a multiple of num_key_value_heads={num_kv_heads}")
    self.num_heads = num_heads
    self.num_kv_heads = num_kv_heads
    self.head_dim = head_dim
    kw = dict(use_bias=False, rngs=rngs, param_dtype=param_dtype)
    self.q_proj = Dense(hidden_size, num_heads * head_dim, axes=("embed", "heads"), **kw)
    self.k_proj = Dense(hidden_size, num_kv_heads * head_dim, axes=("embed", "kv_heads"), **kw)
    self.v_proj = Dense(hidden_size, num_kv_heads * head_dim, axes=("embed", "kv_heads"), **kw)
    self.o_proj = Dense(num_heads * head_dim, hidden_size, axes=("heads", "embed"), **kw)

  def qkv(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None):
    """Projects x [B, T, E] to rotated q [B, T, H, D] and k, v [B, T, K, D]."""
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    if rope is not None:
      cos, sin = rope
      q = apply_rope(q, cos, sin)
      k = apply_rope(k, cos, sin)
    return q, k, v

  def output(self, attended: jax.Array) -> jax.Array:
    b, t = attended.shape[:2]
    return self.o_proj(attended.reshape(b, t, self.num_heads * self.head_dim))
