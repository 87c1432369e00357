"""LocDiT: the flow-matching velocity network that generates one patch of latents.

Its sequence is [conditioning token(s), previous patch frames, noisy patch frames] through a
bidirectional transformer; the outputs at the noisy frames are the velocity.
* version 1: one token, mu + time embedding;
* version 2: mu split into two tokens, then the time embedding as its own token.
The time embedding is time_mlp(sin(1000 t)) + delta_time_mlp(sin(1000 dt)); dt is 0 outside
MeanFlow mode, but delta_time_mlp(embedding(0)) is still a learned constant that is added.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.dense import Dense
from tts_jax.nn.embeddings import sinusoidal_embedding
from tts_jax.nn.transformer import Transformer, TransformerConfig


class TimestepMLP(nnx.Module):

  def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.linear_1 = Dense(dim, dim, axes=("embed", "mlp"), rngs=rngs, param_dtype=param_dtype)
    self.linear_2 = Dense(dim, dim, axes=("mlp", "embed"), rngs=rngs, param_dtype=param_dtype)

  def __call__(self, x):
    return self.linear_2(jax.nn.silu(self.linear_1(x)))


class LocalDiT(nnx.Module):

  def __init__(self, config: TransformerConfig, feat_dim: int, condition_tokens: int, *, rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    h = config.hidden_size
    self.hidden_size = h
    self.condition_tokens = condition_tokens
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.in_proj = Dense(feat_dim, h, axes=(None, "embed"), **kw)
    self.cond_proj = Dense(feat_dim, h, axes=(None, "embed"), **kw)
    self.out_proj = Dense(h, feat_dim, axes=("embed", None), **kw)
    self.time_mlp = TimestepMLP(h, **kw)
    self.delta_time_mlp = TimestepMLP(h, **kw)
    self.decoder = Transformer(config, rngs=rngs, param_dtype=param_dtype)

  def time_embedding(self, t: jax.Array, dt: jax.Array, dtype) -> jax.Array:
    emb_t = self.time_mlp(sinusoidal_embedding(t, self.hidden_size).astype(dtype))
    emb_dt = self.delta_time_mlp(sinusoidal_embedding(dt, self.hidden_size).astype(dtype))
    return emb_t + emb_dt

  def __call__(self, x: jax.Array, mu: jax.Array, t: jax.Array, cond: jax.Array, dt: jax.Array) -> jax.Array:
    """Velocity at noisy patch x.

    Args:
      x: noisy patch [N, P, D].
      mu: conditioning [N, condition_tokens * H].
      t, dt: flow time and MeanFlow interval [N].
      cond: previous patch [N, P', D].
    Returns:
      velocity [N, P, D].
    """
    n, p, _ = x.shape
    x = self.in_proj(x)
    cond = self.cond_proj(cond)
    t_emb = self.time_embedding(t, dt, x.dtype)
    if self.condition_tokens == 1:
      prefix = (mu + t_emb)[:, None, :]
    else:
      prefix = jnp.concatenate([mu.reshape(n, self.condition_tokens, self.hidden_size), t_emb[:, None, :]], axis=1)
    hidden = self.decoder(jnp.concatenate([prefix, cond, x], axis=1), causal=False)
    return self.out_proj(hidden[:, -p:])
