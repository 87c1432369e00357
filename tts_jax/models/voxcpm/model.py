"""VoxCPM: tokenizer-free hierarchical TTS (TSLM -> FSQ -> RALM -> LocDiT), both generations.

Per autoregressive position, text tokens and latent patches share one sequence through a masked
sum of their embeddings. The TSLM's outputs at audio positions pass an FSQ bottleneck (the
"semi-discrete" semantic code); the RALM refines them with the patch embeddings; LocDiT turns
both hidden states into the next patch by flow matching; a stop head on the TSLM state ends
generation. This module holds the parameters and the per-position building blocks; the
training forward is in `loss.py` and the autoregressive loop in `inference.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.models.flow.cfm import euler_sample
from tts_jax.models.voxcpm.config import VoxCPMConfig
from tts_jax.models.voxcpm.locdit import LocalDiT
from tts_jax.models.voxcpm.locenc import LocalEncoder
from tts_jax.nn.dense import Dense
from tts_jax.nn.transformer import Transformer
from tts_jax.quant.fsq import scalar_quantize


class FSQBottleneck(nnx.Module):
  """h -> out_proj(FSQ(tanh(in_proj(h)))): the semi-discrete semantic bottleneck."""

  def __init__(self, hidden: int, latent: int, scale: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.scale = scale
    self.in_proj = Dense(hidden, latent, axes=("embed", None), rngs=rngs, param_dtype=param_dtype)
    self.out_proj = Dense(latent, hidden, axes=(None, "embed"), rngs=rngs, param_dtype=param_dtype)

  def __call__(self, h: jax.Array, *, training: bool = False) -> jax.Array:
    z = jnp.tanh(self.in_proj(h))
    return self.out_proj(scalar_quantize(z, self.scale, straight_through=training))


class StopPredictor(nnx.Module):
  """Two-way logits (continue, stop) from a TSLM state: head(silu(proj(h)))."""

  def __init__(self, hidden: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.proj = Dense(hidden, hidden, axes=("embed", "mlp"), rngs=rngs, param_dtype=param_dtype)
    self.head = Dense(hidden, 2, use_bias=False, axes=("mlp", None), rngs=rngs, param_dtype=param_dtype)

  def __call__(self, h: jax.Array) -> jax.Array:
    return self.head(jax.nn.silu(self.proj(h)))


class VoxCPM(nnx.Module):

  def __init__(self, config: VoxCPMConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.config = config
    c = config
    h, h_enc, h_dit = c.lm.hidden_size, c.encoder.hidden_size, c.dit.hidden_size
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.tslm = Transformer(c.lm, **kw)
    self.ralm = Transformer(c.residual_lm, **kw)
    self.local_encoder = LocalEncoder(c.encoder, c.feat_dim, **kw)
    self.local_dit = LocalDiT(c.dit, c.feat_dim, c.dit_condition_tokens, **kw)
    self.fsq = FSQBottleneck(h, c.fsq_latent_dim, c.fsq_scale, **kw)
    self.enc_to_lm = Dense(h_enc, h, axes=("embed", "mlp"), **kw)
    self.lm_to_dit = Dense(h, h_dit, axes=("embed", "mlp"), **kw)
    self.res_to_dit = Dense(h, h_dit, axes=("embed", "mlp"), **kw)
    self.residual_fusion = Dense(2 * h, h, axes=("mlp", "embed"), **kw) if c.fuse_residual_by_concat else None
    self.stop = StopPredictor(h, **kw)

  # --- inputs --------------------------------------------------------------------------------
  def embed_patches(self, patches_btpd: jax.Array) -> jax.Array:
    """LocEnc + projection: latent patches [B, T, P, D] -> TSLM-width embeddings [B, T, H]."""
    return self.enc_to_lm(self.local_encoder(patches_btpd))

  def embed_text(self, tokens_bt: jax.Array) -> jax.Array:
    emb = self.tslm.embed_tokens(tokens_bt)
    if self.config.text_embed_scale != 1.0:
      emb = emb * self.config.text_embed_scale
    return emb

  def combine_inputs(self, tokens_bt, text_mask_bt, patch_embed_bth, audio_mask_bt) -> jax.Array:
    """Masked sum: text embedding at text positions plus patch embedding at audio positions."""
    text = text_mask_bt[..., None].astype(patch_embed_bth.dtype) * self.embed_text(tokens_bt)
    return text + audio_mask_bt[..., None].astype(patch_embed_bth.dtype) * patch_embed_bth

  # --- semantic / residual path -----------------------------------------------------------------
  def semantic_code(self, tslm_hidden, text_mask, audio_mask, *, training: bool = False) -> jax.Array:
    """FSQ at audio positions, the raw TSLM state at text positions (zero where neither)."""
    dtype = tslm_hidden.dtype
    quantized = self.fsq(tslm_hidden, training=training)
    return (quantized * audio_mask[..., None].astype(dtype) + tslm_hidden * text_mask[..., None].astype(dtype))

  def residual_input(self, semantic: jax.Array, patch_embed: jax.Array) -> jax.Array:
    """RALM input: v1 adds the (masked) patch embedding, v2 concatenates and projects."""
    if self.residual_fusion is None:
      return semantic + patch_embed
    return self.residual_fusion(jnp.concatenate([semantic, patch_embed], axis=-1))

  def dit_condition(self, lm_hidden: jax.Array, residual_hidden: jax.Array) -> jax.Array:
    """mu: sum (v1) or concatenation (v2, two tokens) of the projected TSLM and RALM states."""
    a, b = self.lm_to_dit(lm_hidden), self.res_to_dit(residual_hidden)
    return jnp.concatenate([a, b], axis=-1) if self.config.dit_condition_tokens == 2 else a + b

  def stop_logits(self, lm_hidden: jax.Array) -> jax.Array:
    return self.stop(lm_hidden)

  # --- patch generation ------------------------------------------------------------------------
  def sample_patch(self, mu: jax.Array, prev_patch: jax.Array, z: jax.Array, *, num_steps: int,
                   cfg_value: float | jax.Array, use_cfg_zero_star: bool = True) -> jax.Array:
    """Euler flow sampling of one patch [N, P, D] from noise z, conditioned on mu and the
    previous patch. The unconditional branch zeroes mu and shares one network call."""
    n = z.shape[0]
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=0)
    cond2 = jnp.concatenate([prev_patch, prev_patch], axis=0)
    zeros = jnp.zeros((2 * n,), jnp.float32)

    def velocity_fn(x, t):
      v = self.local_dit(jnp.concatenate([x, x], axis=0), mu2, jnp.full((2 * n,), t), cond2, zeros)
      return v[:n], v[n:]

    return euler_sample(velocity_fn, z, num_steps, cfg_value, use_cfg_zero_star)
