"""The compiled VoxCPM generation loop: one device call generates every patch of a batch.

Prefill, then a `lax.while_loop` over patches whose body samples a patch with LocDiT (Euler +
CFG-Zero*, fused), encodes it with LocEnc, advances TSLM and RALM on their static KV caches and
evaluates the stop head. Each sequence stops on its own (stop head after `min_len`, or its
`max_len`); the loop ends when all have stopped. Nothing runs in Python per patch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from tts_jax.models.voxcpm.inference import DecodeState, generate_step, prefill
from tts_jax.models.voxcpm.model import VoxCPM


@struct.dataclass
class PromptBatch:
  """Left-padded prompts of a batch and each sequence's generation limits.

  Attributes:
    tokens, text_mask, audio_mask: [B, T]; feats: [B, T, P, D].
    left_pad: [B] padding before each prompt.
    min_len: [B] the stop head is obeyed only after this many patches (as `i > min_len`).
    max_len: [B] at most this many patches.
    keys: [B] PRNG keys; patch i of sequence b uses noise from fold_in(keys[b], i), so a sequence
      gets the same noise whatever batch it is generated in.
  """

  tokens: jax.Array
  text_mask: jax.Array
  audio_mask: jax.Array
  feats: jax.Array
  left_pad: jax.Array
  min_len: jax.Array
  max_len: jax.Array
  keys: jax.Array


def _noise(keys, step, patch_shape, dtype):
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), patch_shape, dtype))(keys)


@functools.partial(jax.jit, static_argnames=("max_patches", "cache_length", "num_steps"))
def generate_patches(model: VoxCPM, prompt: PromptBatch, cfg_value: jax.Array, noise: jax.Array | None = None, *,
                     max_patches: int, cache_length: int, num_steps: int) -> tuple[jax.Array, jax.Array]:
  """Generates up to `max_patches` patches per sequence.

  Args:
    cfg_value: guidance scale (traced: changing it does not recompile).
    noise: optional [max_patches, B, P, D] standard-normal flow noise to use instead of `keys`
      (to reproduce another implementation's random stream).
  Returns:
    patches [B, max_patches, P, D] (zeros after each sequence's end) and lengths [B].
  """
  b, _, p, d = prompt.feats.shape
  dtype = prompt.feats.dtype
  state = prefill(model, prompt.tokens, prompt.text_mask, prompt.feats, prompt.audio_mask, cache_length,
                  cache_dtype=dtype, left_pad=prompt.left_pad)

  def cond(carry):
    i, done = carry[0], carry[3]
    return (i < max_patches) & ~jnp.all(done)

  def body(carry):
    i, state, patches, done, lengths = carry
    z = noise[i].astype(dtype) if noise is not None else _noise(prompt.keys, i, (p, d), dtype)
    state, patch, stop_logits = generate_step(model, state, z, num_steps=num_steps, cfg_value=cfg_value)
    patches = jax.lax.dynamic_update_slice_in_dim(patches, jnp.where(done[:, None, None], 0, patch)[:, None],
                                                  i, axis=1)
    lengths = jnp.where(done, lengths, i + 1)
    stop = (jnp.argmax(stop_logits, axis=-1) == 1) & (i > prompt.min_len)
    done = done | stop | (i + 1 >= prompt.max_len)
    return i + 1, state, patches, done, lengths

  init = (jnp.int32(0), state, jnp.zeros((b, max_patches, p, d), dtype), prompt.max_len <= 0,
          jnp.zeros((b,), jnp.int32))
  _, _, patches, _, lengths = jax.lax.while_loop(cond, body, init)
  return patches, lengths


@functools.partial(jax.jit, static_argnames=("cache_length",))
def start_stream(model: VoxCPM, prompt: PromptBatch, *, cache_length: int) -> DecodeState:
  """Prefill for patch-by-patch (streaming) generation."""
  return prefill(model, prompt.tokens, prompt.text_mask, prompt.feats, prompt.audio_mask, cache_length,
                 cache_dtype=prompt.feats.dtype, left_pad=prompt.left_pad)


@functools.partial(jax.jit, static_argnames=("num_steps",), donate_argnums=(1,))
def stream_step(model: VoxCPM, state: DecodeState, z: jax.Array, cfg_value: jax.Array, *, num_steps: int):
  """One patch of streaming generation: (new state, patch [B, P, D], stop logits [B, 2])."""
  return generate_step(model, state, z.astype(state.prev_patch.dtype), num_steps=num_steps, cfg_value=cfg_value)
