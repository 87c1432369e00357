"""The MiniCPM-4 decoder stack used by every transformer of VoxCPM (TSLM, RALM, LocEnc, LocDiT).

Pre-norm blocks `x + attn(norm(x))`, `x + mlp(norm(x))` with RMSNorm, grouped-query attention,
(Long)RoPE and a SwiGLU MLP, followed by a final RMSNorm. Layers are stored stacked (every
parameter has a leading `layers` axis) and run with `jax.lax.scan`, so a 28-layer model
compiles one layer's program, and the KV cache is a single array per k/v.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts_jax.nn.attention import Attention, dot_product_attention
from tts_jax.nn.dense import Dense, Embed
from tts_jax.nn.kv_cache import KVCache
from tts_jax.nn.norm import RMSNorm
from tts_jax.nn.rope import RopeConfig, rope_cos_sin


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Topology of one decoder stack.

  Attributes:
    head_dim: attention head size; None means hidden_size // num_heads (MiniCPM `kv_channels`).
    rope: rotary settings, None for no positional encoding (VoxCPM2's residual LM).
    vocab_size: > 0 adds a token embedding table.
    residual_scale: multiplier of each residual branch (MiniCPM muP: scale_depth / sqrt(layers)).
  """

  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int | None = None
  rms_norm_eps: float = 1e-5
  rope: RopeConfig | None = RopeConfig()
  vocab_size: int = 0
  residual_scale: float = 1.0

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim if self.head_dim else self.hidden_size // self.num_heads

  def validate(self, name: str = "transformer") -> None:
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"{name}: num_heads={self.num_heads} is not a multiple of "
                       f"num_key_value_heads={self.num_kv_heads}")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(f"{name}: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    if self.resolved_head_dim % 2:
      raise ValueError(f"{name}: head size {self.resolved_head_dim} must be even for rotary embeddings")
    if self.rope is not None:
      self.rope.extension_factors(self.resolved_head_dim)  # raises on a length mismatch


class SwiGLU(nnx.Module):

  def __init__(self, hidden_size: int, intermediate_size: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    kw = dict(use_bias=False, rngs=rngs, param_dtype=param_dtype)
    self.gate_proj = Dense(hidden_size, intermediate_size, axes=("embed", "mlp"), **kw)
    self.up_proj = Dense(hidden_size, intermediate_size, axes=("embed", "mlp"), **kw)
    self.down_proj = Dense(intermediate_size, hidden_size, axes=("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    c = config
    self.residual_scale = c.residual_scale
    self.input_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.self_attn = Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.resolved_head_dim,
                               rngs=rngs, param_dtype=param_dtype)
    self.post_attention_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.mlp = SwiGLU(c.hidden_size, c.intermediate_size, rngs=rngs, param_dtype=param_dtype)

  def _residual(self, x, branch):
    if self.residual_scale != 1.0:
      branch = branch * self.residual_scale
    return x + branch

  def _finish(self, x, attended):
    x = self._residual(x, self.self_attn.output(attended))
    return self._residual(x, self.mlp(self.post_attention_layernorm(x)))

  def __call__(self, x, rope, mask):
    """Full-sequence pass. Returns the new hidden states and this layer's (k, v)."""
    q, k, v = self.self_attn.qkv(self.input_layernorm(x), rope)
    return self._finish(x, dot_product_attention(q, k, v, mask)), (k, v)

  def step(self, x, rope, k_cache, v_cache, index, mask):
    """One new position per sequence against this layer's cache [B, S, K, D].

    The new key/value are placed at `index` before attending, so the query sees itself. Returns
    the new hidden states and the new (k, v) [B, 1, K, D] for the caller to store.
    """
    q, k, v = self.self_attn.qkv(self.input_layernorm(x), rope)
    k, v = k.astype(k_cache.dtype), v.astype(v_cache.dtype)
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k, index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, index, axis=1)
    return self._finish(x, dot_product_attention(q, k_cache, v_cache, mask)), (k, v)


def _stacked_layers(config: TransformerConfig, rngs: nnx.Rngs, param_dtype) -> DecoderLayer:
  """Creates `num_layers` layers with every parameter stacked on a leading `layers` axis."""

  @nnx.split_rngs(splits=config.num_layers)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def create(layer_rngs: nnx.Rngs) -> DecoderLayer:
    return DecoderLayer(config, rngs=layer_rngs, param_dtype=param_dtype)

  return create(rngs)


class Transformer(nnx.Module):
  """Decoder stack: optional token embedding, layers, final RMSNorm.

  Layers are stored stacked (the canonical form: one `lax.scan`, one layer to compile, one array
  per parameter to shard and checkpoint). `unstack_layers()` converts them to separate per-layer
  parameters run by an unrolled loop, which decodes several times faster on CPU, where XLA copies
  every slice of a stacked weight before using it. Both forms run the same layer code.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    config.validate()
    self.config = config
    self.embed_tokens = (Embed(config.vocab_size, config.hidden_size, rngs=rngs, param_dtype=param_dtype)
                         if config.vocab_size > 0 else None)
    self.layers = _stacked_layers(config, rngs, param_dtype)
    self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, rngs=rngs, param_dtype=param_dtype)

  @property
  def is_stacked(self) -> bool:
    return not isinstance(self.layers, nnx.List)

  def unstack_layers(self) -> None:
    """Replaces the stacked layers by per-layer modules holding slices of the same values."""
    if not self.is_stacked:
      return
    stacked = {tuple(p): v for p, v in nnx.to_flat_state(nnx.state(self.layers))}
    layers = []
    for i in range(self.config.num_layers):
      layer = nnx.eval_shape(lambda: DecoderLayer(self.config, rngs=nnx.Rngs(0)))
      graphdef, abstract = nnx.split(layer)
      flat = [(tuple(p), v.replace(stacked[tuple(p)][...][i])) for p, v in nnx.to_flat_state(abstract)]
      layers.append(nnx.merge(graphdef, nnx.from_flat_state(flat)))
    self.layers = nnx.List(layers)

  # ----------------------------------------------------------------------------------------------
  def _rope(self, positions: jax.Array):
    if self.config.rope is None:
      return None
    return rope_cos_sin(positions, self.config.resolved_head_dim, self.config.rope)

  def _over_layers(self, body, carry, extra_xs=()):
    """carry, ys = body(layer, carry, *xs_i) over the layers (scan, or an unrolled loop)."""
    if not self.is_stacked:
      outputs = []
      for i, layer in enumerate(self.layers):
        carry, y = body(layer, carry, *(x[i] for x in extra_xs))
        outputs.append(y)
      if outputs[0] is None:
        return carry, None
      return carry, jax.tree.map(lambda *ys: jnp.stack(ys), *outputs)
    graphdef, layer_state = nnx.split(self.layers)

    def scan_body(carry, xs):
      state, *rest = xs
      return body(nnx.merge(graphdef, state), carry, *rest)

    return jax.lax.scan(scan_body, carry, (layer_state, *extra_xs))

  def forward(self, x: jax.Array, *, causal: bool, positions: jax.Array | None = None,
              kv_mask: jax.Array | None = None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs the whole sequence.

    Args:
      x: input embeddings [B, T, E].
      causal: causal (TSLM, RALM) or bidirectional (LocEnc, LocDiT) attention.
      positions: rotary positions [B, T]; default 0..T-1.
      kv_mask: [B, T], False for padding keys.
    Returns:
      hidden states [B, T, E] after the final norm, and the per-layer keys/values
      ([layers, B, T, K, D] each) for filling a KV cache.
    """
    b, t, _ = x.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    rope = self._rope(positions)
    mask = None
    if causal:
      mask = jnp.tril(jnp.ones((t, t), bool))[None]
    if kv_mask is not None:
      key_mask = kv_mask[:, None, :].astype(bool)
      mask = key_mask if mask is None else mask & key_mask

    def body(layer, h, *_):
      h, kv = layer(h, rope, mask)
      return h, kv

    h, (k, v) = self._over_layers(body, x)
    return self.norm(h), (k, v)

  def __call__(self, x: jax.Array, *, causal: bool, **kwargs) -> jax.Array:
    return self.forward(x, causal=causal, **kwargs)[0]

  def init_cache(self, batch: int, max_length: int, dtype=jnp.float32) -> KVCache:
    c = self.config
    return KVCache.zeros(c.num_layers, batch, max_length, c.num_kv_heads, c.resolved_head_dim, dtype)

  def prefill(self, x: jax.Array, cache: KVCache, **kwargs) -> tuple[jax.Array, KVCache]:
    """Causal pass over a prompt [B, T, E] that also stores its keys/values in `cache`."""
    hidden, (k, v) = self.forward(x, causal=True, **kwargs)
    return hidden, cache.write_prefix(k, v)

  def decode_step(self, x: jax.Array, cache: KVCache, index: jax.Array, *,
                  positions: jax.Array | None = None,
                  kv_mask: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """Processes one new position per sequence.

    Args:
      x: [B, E] embeddings of the new position.
      cache: keys/values of positions < index.
      index: traced int32 scalar, the cache slot (= sequence position) of x.
      positions: rotary positions [B]; default `index` for every sequence.
      kv_mask: [B, S] validity of cache slots (for left-padded batches); slots > index are
        always masked.
    Returns:
      hidden [B, E] after the final norm, and the updated cache.
    """
    b = x.shape[0]
    if positions is None:
      positions = jnp.full((b,), index, jnp.int32)
    rope = self._rope(positions[:, None])
    mask = (jnp.arange(cache.max_length) <= index)[None, None, :]
    if kv_mask is not None:
      mask = mask & kv_mask[:, None, :].astype(bool)

    # The whole cache rides in the scan carry and only the new position is written per layer, so
    # a decode step never rewrites the cache (which a scan over per-layer slices would do).
    def body(layer, carry, layer_index):
      h, k_all, v_all = carry
      h, (new_k, new_v) = layer.step(h, rope, k_all[layer_index], v_all[layer_index], index, mask)
      k_all = jax.lax.dynamic_update_slice(k_all, new_k[None], (layer_index, 0, index, 0, 0))
      v_all = jax.lax.dynamic_update_slice(v_all, new_v[None], (layer_index, 0, index, 0, 0))
      return (h, k_all, v_all), None

    layer_ids = np.arange(self.config.num_layers)  # static ints in the unrolled form
    (h, k, v), _ = self._over_layers(body, (x[:, None, :], cache.k, cache.v), (layer_ids,))
    return self.norm(h[:, 0]), KVCache(k=k, v=v)


def mup_residual_scale(scale_depth: float, num_layers: int) -> float:
  """MiniCPM's muP residual multiplier."""
  return scale_depth / math.sqrt(num_layers)


def unstack_all_layers(module: nnx.Module) -> nnx.Module:
  """Converts every Transformer inside `module` to per-layer parameters (in place); returns it."""
  stacks = [node for _, node in nnx.iter_graph(module) if isinstance(node, Transformer)]
  for stack in stacks:
    stack.unstack_layers()
  return module
