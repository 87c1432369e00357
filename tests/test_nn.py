"""Building blocks of tts_jax.nn, tested on their own (no reference implementation needed)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts_jax.nn.attention import dot_product_attention
from tts_jax.nn.conv import WNConv1d, WNConvTranspose1d, conv_transpose1d, depthwise_conv1d
from tts_jax.nn.rope import RopeConfig, rope_cos_sin
from tts_jax.nn.transformer import Transformer, TransformerConfig
from tts_jax.quant.fsq import scalar_quantize


def _config(**kw):
  rope = RopeConfig(max_position_embeddings=64, original_max_position_embeddings=16,
                    short_factor=[1.0, 2.0, 3.0, 4.0], long_factor=[1.5, 2.5, 8.0, 30.0])
  base = dict(hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8, rope=rope)
  base.update(kw)
  return TransformerConfig(**base)


def test_decode_steps_equal_full_causal_pass():
  model = Transformer(_config(vocab_size=20), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 9, 32))
  full = model(x, causal=True)
  hidden, cache = model.prefill(x[:, :4], model.init_cache(2, 12))
  np.testing.assert_allclose(hidden, full[:, :4], atol=1e-6)
  step = jax.jit(lambda m, h, c, i: m.decode_step(h, c, i))
  for i in range(4, 9):
    out, cache = step(model, x[:, i], cache, jnp.int32(i))  # traced position: one compilation
    np.testing.assert_allclose(out, full[:, i], atol=1e-5)
  assert step._cache_size() == 1


def test_left_padded_batch_decodes_like_unpadded_sequences():
  """A short prompt left-padded next to a long one gives the same states as run alone, when the
  padding is masked and rotary positions start at its first real token."""
  model = Transformer(_config(), rngs=nnx.Rngs(0))
  long = jax.random.normal(jax.random.key(2), (1, 6, 32))
  short = jax.random.normal(jax.random.key(3), (1, 4, 32))
  pad = 2
  x = jnp.concatenate([long, jnp.pad(short, ((0, 0), (pad, 0), (0, 0)))], axis=0)
  valid = jnp.array([[True] * 6, [False] * pad + [True] * 4])
  positions = jnp.array([list(range(6)), [0] * pad + list(range(4))])
  cache_mask = jnp.pad(valid, ((0, 0), (0, 4)), constant_values=True)
  hidden, cache = model.prefill(x, model.init_cache(2, 10), positions=positions, kv_mask=valid)
  np.testing.assert_allclose(hidden[1, pad:], model(short, causal=True)[0], atol=1e-5)
  nxt = jax.random.normal(jax.random.key(4), (2, 32))
  out, _ = model.decode_step(nxt, cache, jnp.int32(6), positions=jnp.array([6, 4]), kv_mask=cache_mask)
  alone = model(jnp.concatenate([short, nxt[1][None, None]], axis=1), causal=True)[0, -1]
  np.testing.assert_allclose(out[1], alone, atol=1e-5)


def test_grouped_query_attention_equals_repeated_heads():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  k = rng.normal(size=(2, 7, 2, 4)).astype(np.float32)
  v = rng.normal(size=(2, 7, 2, 4)).astype(np.float32)
  mask = np.tril(np.ones((5, 7), bool), 2)[None]
  kr, vr = np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2)  # head h reads kv head h // 3
  logits = np.einsum("bthd,bshd->bhts", q, kr) / 2.0
  logits = np.where(mask[:, None], logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.einsum("bhts,bshd->bthd", p, vr)
  np.testing.assert_allclose(dot_product_attention(q, k, v, mask), want, atol=1e-5)


def test_longrope_factor_selection_and_scaling():
  short, long = (1.0, 2.0), (3.0, 5.0)
  same = RopeConfig(max_position_embeddings=128, original_max_position_embeddings=128, short_factor=short,
                    long_factor=long)
  extended = RopeConfig(max_position_embeddings=512, original_max_position_embeddings=128, short_factor=short,
                        long_factor=long)
  assert not same.uses_long_factors and same.scaling_factor == 1.0
  assert extended.uses_long_factors
  assert extended.scaling_factor == pytest.approx(math.sqrt(1 + math.log(4) / math.log(128)))
  pos = jnp.arange(5)
  cos, sin = rope_cos_sin(pos, 4, extended)
  inv_freq = 1.0 / 10000 ** (np.arange(0, 4, 2) / 4)
  angles = np.arange(5)[:, None] / np.array(long) * inv_freq
  np.testing.assert_allclose(cos, np.cos(np.concatenate([angles, angles], -1)) * extended.scaling_factor, atol=1e-6)
  np.testing.assert_allclose(sin, np.sin(np.concatenate([angles, angles], -1)) * extended.scaling_factor, atol=1e-6)
  with pytest.raises(ValueError, match="needs head_dim/2 = 4 factors, the config has 2"):
    extended.extension_factors(8)


def test_depthwise_conv_equals_grouped_convolution():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 80, 6)).astype(np.float32)
  w = rng.normal(size=(7, 6)).astype(np.float32)
  for dilation in (1, 3, 9):
    grouped = jax.lax.conv_general_dilated(x, w[:, None, :], (1,), "VALID", rhs_dilation=(dilation,),
                                           dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=6)
    np.testing.assert_allclose(depthwise_conv1d(x, w, dilation), grouped, atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (10, 5), (16, 8), (12, 6), (5, 2), (3, 4)])
def test_polyphase_transposed_conv_equals_lax_conv_transpose(kernel, stride):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 9, 3)).astype(np.float32)
  w = rng.normal(size=(kernel, 3, 5)).astype(np.float32)
  # conv_transpose as a dilated-input convolution with the flipped kernel.
  want = jax.lax.conv_general_dilated(x, w[::-1], (1,), [(kernel - 1, kernel - 1)], lhs_dilation=(stride,),
                                      dimension_numbers=("NWC", "WIO", "NWC"))
  got = conv_transpose1d(x, w, stride)
  assert got.shape == (2, (9 - 1) * stride + kernel, 5)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_weight_norm_starts_at_v_and_causal_padding():
  conv = WNConv1d(3, 4, 5, left_pad=4, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(conv.weight(), conv.weight_v[...], rtol=1e-6)
  x = jax.random.normal(jax.random.key(0), (1, 10, 3))
  y = conv(x)
  assert y.shape == (1, 10, 4)
  # Causality: changing the future does not change the past.
  y2 = conv(x.at[:, 7:].set(0.0))
  np.testing.assert_allclose(y[:, :7], y2[:, :7], atol=1e-6)
  up = WNConvTranspose1d(4, 2, 6, stride=3, right_trim=3, rngs=nnx.Rngs(1))
  assert up(y).shape == (1, 30, 2)


def test_fsq_rounds_half_to_even_with_identity_gradient():
  x = jnp.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.26, -0.74]) / 9
  np.testing.assert_allclose(scalar_quantize(x, 9, straight_through=False) * 9, [0, 2, 2, 0, -2, 0, -1], atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(scalar_quantize(v, 9, straight_through=True) * jnp.arange(7.0)))(x)
  np.testing.assert_allclose(grad, np.arange(7.0))
  np.testing.assert_allclose(scalar_quantize(x, 9, straight_through=True), scalar_quantize(x, 9, straight_through=False),
                             atol=1e-7)


def test_every_parameter_has_logical_axes():
  model = Transformer(_config(vocab_size=10), rngs=nnx.Rngs(0))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = var.out_sharding
    assert len(axes) == var.get_value().ndim, path
    assert (axes[0] == "layers") == ("layers" in path), path
  names = {a for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) for a in v.out_sharding}
  assert {"embed", "heads", "kv_heads", "mlp", "vocab", "layers"} <= names


def test_unstacked_layers_compute_the_same():
  model = Transformer(_config(vocab_size=10), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(5), (2, 6, 32))
  full = model(x, causal=True)
  _, cache = model.prefill(x[:, :5], model.init_cache(2, 8))
  step, _ = model.decode_step(x[:, 5], cache, jnp.int32(5))
  model.unstack_layers()
  assert not model.is_stacked and len(model.layers) == 3
  np.testing.assert_allclose(model(x, causal=True), full, atol=1e-6)
  _, cache = model.prefill(x[:, :5], model.init_cache(2, 8))
  np.testing.assert_allclose(model.decode_step(x[:, 5], cache, jnp.int32(5))[0], step, atol=1e-6)
  for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    assert "layers" not in var.out_sharding
