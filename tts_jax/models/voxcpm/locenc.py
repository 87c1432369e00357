"""LocEnc: summarises one patch of latent frames into one vector through a learned CLS token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.dense import Dense
from tts_jax.nn.params import normal_init, param
from tts_jax.nn.transformer import Transformer, TransformerConfig


class LocalEncoder(nnx.Module):

  def __init__(self, config: TransformerConfig, feat_dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.in_proj = Dense(feat_dim, config.hidden_size, axes=(None, "embed"), rngs=rngs, param_dtype=param_dtype)
    self.special_token = param(rngs.params(), normal_init(1.0), (config.hidden_size,), ("embed",), param_dtype)
    self.encoder = Transformer(config, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, patches_btpd: jax.Array) -> jax.Array:
    """[B, T, P, D] latent patches -> [B, T, H] (the CLS output of each patch)."""
    b, t, p, _ = patches_btpd.shape
    x = self.in_proj(patches_btpd)
    cls = jnp.broadcast_to(self.special_token[...].astype(x.dtype), (b, t, 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=2).reshape(b * t, p + 1, -1)
    hidden = self.encoder(x, causal=False)
    return hidden[:, 0].reshape(b, t, -1)
