"""VoxCPM training objective: flow-matching MSE on every target patch plus the stop loss.

Teacher forcing runs the whole packed sequence through TSLM and RALM once; the hidden states
are shifted right by one position so that position t's patch is generated from the states
after position t-1, exactly as in autoregressive generation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from tts_jax.models.flow.cfm import FlowNoise, interpolate, sample_flow_noise
from tts_jax.models.voxcpm.model import VoxCPM


@struct.dataclass
class VoxCPMBatch:
  """A packed training batch; T positions, each a text token or a latent patch.

  Attributes:
    text_tokens: [B, T] int32 token ids (0 at audio positions).
    text_mask: [B, T] 1 at text positions.
    audio_feats: [B, T, P, D] latent patches (zeros at text positions).
    audio_mask: [B, T] 1 at audio positions (reference and target audio).
    loss_mask: [B, T] 1 at target-audio positions that are trained.
    labels: [B, T] int32 stop labels, 1 at the last target patch.
  """

  text_tokens: jax.Array
  text_mask: jax.Array
  audio_feats: jax.Array
  audio_mask: jax.Array
  loss_mask: jax.Array
  labels: jax.Array


def _shift_right(x_btd: jax.Array) -> jax.Array:
  return jnp.pad(x_btd, ((0, 0), (1, 0)) + ((0, 0),) * (x_btd.ndim - 2))[:, :-1]


def teacher_forcing(model: VoxCPM, batch: VoxCPMBatch, *, training: bool) -> dict[str, jax.Array]:
  """Hidden states of the whole sequence.

  Returns a dict with `patch_embed` [B,T,H], `tslm_hidden` (before FSQ), `semantic` (after the
  FSQ mix), `ralm_hidden` [B,T,H], and the DiT conditioning `mu` [B,T,m*H_dit] built from the
  states of the previous position.
  """
  dtype = batch.audio_feats.dtype
  audio_mask = batch.audio_mask.astype(dtype)
  patch_embed = model.embed_patches(batch.audio_feats)
  inputs = model.combine_inputs(batch.text_tokens, batch.text_mask, patch_embed, audio_mask)
  tslm_hidden = model.tslm(inputs, causal=True)
  semantic = model.semantic_code(tslm_hidden, batch.text_mask, audio_mask, training=training)
  ralm_hidden = model.ralm(model.residual_input(semantic, audio_mask[..., None] * patch_embed), causal=True)
  mu = model.dit_condition(_shift_right(semantic), _shift_right(ralm_hidden))
  return dict(patch_embed=patch_embed, tslm_hidden=tslm_hidden, semantic=semantic, ralm_hidden=ralm_hidden, mu=mu)


def voxcpm_loss(model: VoxCPM, batch: VoxCPMBatch, noise: FlowNoise, *, training: bool = True
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Flow-matching + stop loss.

  Args:
    noise: the random draws of the flow loss, one row per (batch, position) pair; see
      `sample_voxcpm_noise`.
  Returns:
    total loss (diffusion + stop, weight 1 each as in the released configs) and the terms.
  """
  b, t, p, d = batch.audio_feats.shape
  states = teacher_forcing(model, batch, training=training)
  lm_prev = _shift_right(states["semantic"])

  target = batch.audio_feats.reshape(b * t, p, d)
  prev_patch = _shift_right(batch.audio_feats).reshape(b * t, p, d)
  mu = states["mu"].reshape(b * t, -1) * noise.keep_condition[:, None].astype(target.dtype)
  y, v_target = interpolate(target, noise)
  v_pred = model.local_dit(y, mu, noise.t, prev_patch, jnp.zeros_like(noise.t))
  per_frame = jnp.mean(jnp.square(v_pred - v_target), axis=-1)  # [B*T, P]
  frame_mask = jnp.repeat(batch.loss_mask.reshape(b * t, 1).astype(per_frame.dtype), p, axis=1)
  diffusion = jnp.sum(per_frame * frame_mask) / jnp.maximum(jnp.sum(frame_mask), 1.0)

  logits = model.stop_logits(lm_prev)
  stop_ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch.labels)
  loss_mask = batch.loss_mask.astype(stop_ce.dtype)
  stop = jnp.sum(stop_ce * loss_mask) / jnp.maximum(jnp.sum(loss_mask), 1.0)
  return diffusion + stop, dict(diffusion=diffusion, stop=stop)


def sample_voxcpm_noise(key: jax.Array, model: VoxCPM, batch: VoxCPMBatch) -> FlowNoise:
  b, t, p, d = batch.audio_feats.shape
  return sample_flow_noise(key, (b * t, p, d), model.config.flow, batch.audio_feats.dtype)
