"""Autoregressive VoxCPM generation as pure functions: prefill, then one step per patch.

`prefill` runs the prompt through TSLM and RALM and fills their KV caches; `generate_step`
samples one patch from the current state and advances both LMs by that patch. Both are plain
traced functions, so a caller can jit them, scan them (`generate_fixed`) or put them in a
`while_loop` with stop flags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from tts_jax.models.voxcpm.model import VoxCPM
from tts_jax.nn.kv_cache import KVCache


@struct.dataclass
class DecodeState:
  """Everything the next autoregressive step needs.

  Attributes:
    tslm_cache, ralm_cache: KV caches with positions < index filled.
    lm_hidden: [B, H] FSQ'd TSLM state that conditions the next patch (and the stop head).
    residual_hidden: [B, H] RALM state that conditions the next patch.
    prev_patch: [B, P, D] the last patch (prompt audio or generated), LocDiT's prefix condition.
    index: int32 scalar, the cache slot the next patch will occupy (shared by the batch: prompts
      are left-padded to a common length).
    left_pad: [B] int32 padding slots before each prompt; rotary position = slot - left_pad.
    cache_valid: [B, S] False at padding slots.
  """

  tslm_cache: KVCache
  ralm_cache: KVCache
  lm_hidden: jax.Array
  residual_hidden: jax.Array
  prev_patch: jax.Array
  index: jax.Array
  left_pad: jax.Array
  cache_valid: jax.Array


def prefill(model: VoxCPM, text_tokens, text_mask, audio_feats, audio_mask, cache_length: int,
            cache_dtype=jnp.float32, left_pad: jax.Array | None = None) -> DecodeState:
  """Runs a prompt [B, T] (tokens/masks) with patches [B, T, P, D] and fills the caches.

  The prompt's last position must be the one before the first generated patch (the audio-start
  token, or the last prompt patch in continuation mode). Prompts of different lengths are
  left-padded to T; `left_pad` [B] says by how much (padding positions are masked and the
  rotary positions of each prompt start at 0 at its first real position).
  """
  b, t = text_tokens.shape
  dtype = audio_feats.dtype
  if left_pad is None:
    left_pad = jnp.zeros((b,), jnp.int32)
  slots = jnp.arange(t)[None, :]
  positions = jnp.maximum(slots - left_pad[:, None], 0)
  valid = slots >= left_pad[:, None]
  audio_mask_f = audio_mask.astype(dtype)
  patch_embed = model.embed_patches(audio_feats)
  inputs = model.combine_inputs(text_tokens, text_mask, patch_embed, audio_mask_f)
  kw = dict(positions=positions, kv_mask=valid)
  tslm_hidden, tslm_cache = model.tslm.prefill(inputs, model.tslm.init_cache(b, cache_length, cache_dtype), **kw)
  semantic = model.semantic_code(tslm_hidden, text_mask, audio_mask_f)
  residual_in = model.residual_input(semantic, audio_mask_f[..., None] * patch_embed)
  ralm_hidden, ralm_cache = model.ralm.prefill(residual_in, model.ralm.init_cache(b, cache_length, cache_dtype), **kw)
  cache_valid = jnp.pad(valid, ((0, 0), (0, cache_length - t)), constant_values=True)
  return DecodeState(
      tslm_cache=tslm_cache, ralm_cache=ralm_cache, lm_hidden=semantic[:, -1], residual_hidden=ralm_hidden[:, -1],
      prev_patch=audio_feats[:, -1], index=jnp.asarray(t, jnp.int32), left_pad=left_pad.astype(jnp.int32),
      cache_valid=cache_valid)


def generate_step(model: VoxCPM, state: DecodeState, z: jax.Array, *, num_steps: int,
                  cfg_value: float | jax.Array) -> tuple[DecodeState, jax.Array, jax.Array]:
  """Samples one patch and advances the LMs.

  Args:
    z: initial flow noise [B, P, D] (standard normal times the temperature).
  Returns:
    the new state, the patch [B, P, D], and the stop logits [B, 2] of the state that produced it
    (the reference stops after emitting a patch whose conditioning state says stop).
  """
  mu = model.dit_condition(state.lm_hidden, state.residual_hidden)
  patch = model.sample_patch(mu, state.prev_patch, z, num_steps=num_steps, cfg_value=cfg_value)
  stop_logits = model.stop_logits(state.lm_hidden)
  patch_embed = model.embed_patches(patch[:, None].astype(state.prev_patch.dtype))[:, 0]
  kw = dict(positions=state.index - state.left_pad, kv_mask=state.cache_valid)
  tslm_out, tslm_cache = model.tslm.decode_step(patch_embed, state.tslm_cache, state.index, **kw)
  lm_hidden = model.fsq(tslm_out)
  ralm_out, ralm_cache = model.ralm.decode_step(model.residual_input(lm_hidden, patch_embed), state.ralm_cache,
                                                state.index, **kw)
  new_state = state.replace(tslm_cache=tslm_cache, ralm_cache=ralm_cache, lm_hidden=lm_hidden,
                            residual_hidden=ralm_out, prev_patch=patch.astype(state.prev_patch.dtype),
                            index=state.index + 1)
  return new_state, patch, stop_logits


def generate_fixed(model: VoxCPM, state: DecodeState, noise: jax.Array, *, num_steps: int,
                   cfg_value: float | jax.Array) -> tuple[jax.Array, jax.Array, DecodeState]:
  """Generates len(noise) patches without stopping.

  Args:
    noise: [N, B, P, D] flow noise of each step.
  Returns:
    patches [B, N, P, D], stop logits [B, N, 2], the final state.
  """

  def body(state, z):
    state, patch, stop = generate_step(model, state, z, num_steps=num_steps, cfg_value=cfg_value)
    return state, (patch, stop)

  state, (patches, stops) = jax.lax.scan(body, state, noise)
  return jnp.swapaxes(patches, 0, 1), jnp.swapaxes(stops, 0, 1), state
