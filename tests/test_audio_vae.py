"""AudioVAE behaviour beyond parity: causality, padding and exact streaming decode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts_jax.codecs.audio_vae import AudioVAE, AudioVAEConfig

CONFIGS = {
    "v1": AudioVAEConfig(version=1, encoder_dim=4, encoder_rates=(2, 5), latent_dim=6, decoder_dim=16,
                         decoder_rates=(5, 2), depthwise=True),
    "v2": AudioVAEConfig(version=2, encoder_dim=4, encoder_rates=(2, 3), latent_dim=6, decoder_dim=32,
                         decoder_rates=(3, 2, 2, 2), depthwise=True, out_sample_rate=48000,
                         sr_bin_boundaries=(20000, 30000, 40000)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_decode_equals_full_decode(name):
  vae = AudioVAE(CONFIGS[name], rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(0), (2, 13, vae.config.latent_dim))  # 13 = 4 + 1 + 4 + 4
  full = jax.jit(lambda v, z: v.decode(z))(vae, z)
  step = jax.jit(lambda v, z, s: v.decode_stream(z, s))
  state = vae.decode_stream_init(2)
  chunks = []
  for start, size in [(0, 4), (4, 1), (5, 4), (9, 4)]:  # uneven chunks: a prompt context, then patches
    audio, state = step(vae, z[:, start:start + size], state)
    chunks.append(audio)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_and_decoder_are_causal(name):
  """Appending frames never changes earlier outputs: what lets us bucket lengths by padding."""
  vae = AudioVAE(CONFIGS[name], rngs=nnx.Rngs(1))
  encode, decode = jax.jit(lambda v, a: v.encode(a)), jax.jit(lambda v, z: v.decode(z))
  hop = vae.config.hop_length
  audio = jax.random.uniform(jax.random.key(1), (1, 7 * hop), minval=-0.5, maxval=0.5)
  padded = encode(vae, jnp.pad(audio, ((0, 0), (0, 5 * hop))))
  np.testing.assert_allclose(padded[:, :7], encode(vae, audio), atol=1e-6)
  z = jax.random.normal(jax.random.key(2), (1, 9, vae.config.latent_dim))
  dhop = vae.config.decode_hop_length
  np.testing.assert_allclose(decode(vae, jnp.pad(z, ((0, 0), (0, 4), (0, 0))))[:, :9 * dhop], decode(vae, z), atol=1e-6)
  assert vae.pad_to_hop(audio[:, :5 * hop + 1]).shape == (1, 6 * hop)
