"""VoxCPM's AudioVAE: a causal DAC-style convolutional VAE, both generations.

* Version 1 (VoxCPM-0.5B, VoxCPM1.5): encoder and decoder at the same sample rate; 16 kHz with
  hop 640 gives 25 Hz, 64-d latents.
* Version 2 (VoxCPM2): 16 kHz encoder, 48 kHz decoder (rates multiply to 1920), and a
  per-channel scale/bias before every decoder block chosen by the requested output rate.
  Its strided encoder convs pad `stride % 2` fewer samples on the left than version 1's (same
  output length, a different alignment for odd strides).

Layout is channels-last: audio [B, samples], latents [B, frames, latent_dim]. `encode` returns
the posterior mean, as the reference does; `encode_posterior` also gives the log-variance for
training.
"""

from __future__ import annotations

import dataclasses
import math
import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.conv import Snake, WNConv1d, WNConvTranspose1d
from tts_jax.nn.params import constant_init, param

_DILATIONS = (1, 3, 9)


def _apply(conv, x):
  return conv(x)


class _Streamer:
  """Runs the decoder's causal convs in streaming mode: each takes the next incoming left
  context and leaves its updated one in `outgoing`, in forward order."""

  def __init__(self, contexts):
    self._incoming = iter(contexts)
    self.outgoing = []

  def __call__(self, conv, x):
    y, context = conv.stream(x, next(self._incoming))
    self.outgoing.append(context)
    return y


class _ContextShapes:
  """Collects the (zero) initial context of every causal conv, in forward order."""

  def __init__(self):
    self.contexts = []

  def __call__(self, conv, x):
    self.contexts.append(conv.stream_context(x.shape[0], x.dtype))
    return conv(x)


@dataclasses.dataclass(frozen=True)
class AudioVAEConfig:
  version: int = 1
  encoder_dim: int = 128
  encoder_rates: tuple[int, ...] = (2, 5, 8, 8)
  latent_dim: int = 64
  decoder_dim: int = 1536
  decoder_rates: tuple[int, ...] = (8, 8, 5, 2)
  depthwise: bool = True
  sample_rate: int = 16000
  out_sample_rate: int | None = None  # None: same as sample_rate
  sr_bin_boundaries: tuple[int, ...] | None = None  # version 2 output-rate buckets
  cond_type: str = "scale_bias"
  use_noise_block: bool = False

  def __post_init__(self):
    for name in ("encoder_rates", "decoder_rates", "sr_bin_boundaries"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(int(v) for v in value))
    if self.version not in (1, 2):
      raise ValueError(f"AudioVAE version must be 1 or 2, got {self.version}")
    if self.sr_bin_boundaries is not None and self.version != 2:
      raise ValueError("sample-rate conditioning (sr_bin_boundaries) exists only in the version-2 AudioVAE")
    if self.cond_type not in ("scale_bias", "scale_bias_init", "add"):
      raise ValueError(f"AudioVAE cond_type {self.cond_type!r} is not supported "
                       "(supported: scale_bias, scale_bias_init, add)")
    if self.decoder_dim % (2 ** len(self.decoder_rates)):
      raise ValueError(f"decoder_dim={self.decoder_dim} must be divisible by 2^{len(self.decoder_rates)}")

  @property
  def hop_length(self) -> int:
    """Input samples per latent frame."""
    return math.prod(self.encoder_rates)

  @property
  def decode_hop_length(self) -> int:
    """Output samples per latent frame."""
    return math.prod(self.decoder_rates)

  @property
  def output_sample_rate(self) -> int:
    return self.out_sample_rate or self.sample_rate

  @property
  def encoder_width(self) -> int:
    return self.encoder_dim * 2 ** len(self.encoder_rates)


def _strided_left_pad(stride: int, version: int) -> int:
  pad = 2 * math.ceil(stride / 2)
  return pad - stride % 2 if version == 2 else pad


class ResidualUnit(nnx.Module):
  """x + conv1x1(snake(conv_k7_dilated(snake(x)))), causal; the k7 conv is depthwise if asked."""

  def __init__(self, channels: int, dilation: int, depthwise: bool, *, rngs: nnx.Rngs):
    self.snake1 = Snake(channels, rngs=rngs)
    self.conv1 = WNConv1d(channels, channels, 7, dilation=dilation, groups=channels if depthwise else 1,
                          left_pad=6 * dilation, rngs=rngs)
    self.snake2 = Snake(channels, rngs=rngs)
    self.conv2 = WNConv1d(channels, channels, 1, rngs=rngs)

  def __call__(self, x, run=_apply):
    return x + run(self.conv2, self.snake2(run(self.conv1, self.snake1(x))))


def _residual_units(channels, depthwise, rngs):
  return nnx.List([ResidualUnit(channels, d, depthwise, rngs=rngs) for d in _DILATIONS])


class EncoderBlock(nnx.Module):

  def __init__(self, in_channels: int, stride: int, config: AudioVAEConfig, *, rngs: nnx.Rngs):
    self.res_units = _residual_units(in_channels, config.depthwise, rngs)
    self.snake = Snake(in_channels, rngs=rngs)
    self.down = WNConv1d(in_channels, 2 * in_channels, 2 * stride, stride=stride,
                         left_pad=_strided_left_pad(stride, config.version), rngs=rngs)

  def __call__(self, x):
    for unit in self.res_units:
      x = unit(x)
    return self.down(self.snake(x))


class Encoder(nnx.Module):

  def __init__(self, config: AudioVAEConfig, *, rngs: nnx.Rngs):
    width = config.encoder_dim
    self.conv_in = WNConv1d(1, width, 7, left_pad=6, rngs=rngs)
    blocks = []
    for stride in config.encoder_rates:
      blocks.append(EncoderBlock(width, stride, config, rngs=rngs))
      width *= 2
    self.blocks = nnx.List(blocks)
    self.fc_mu = WNConv1d(width, config.latent_dim, 3, left_pad=2, rngs=rngs)
    self.fc_logvar = WNConv1d(width, config.latent_dim, 3, left_pad=2, rngs=rngs)

  def __call__(self, audio_bt1):
    x = self.conv_in(audio_bt1)
    for block in self.blocks:
      x = block(x)
    return self.fc_mu(x), self.fc_logvar(x)


class NoiseBlock(nnx.Module):
  """x + n * conv1x1(x), n ~ N(0, 1) shared across channels (off in every released model)."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.linear = WNConv1d(channels, channels, 1, use_bias=False, rngs=rngs)

  def __call__(self, x, key):
    noise = jax.random.normal(key, x.shape[:2] + (1,), x.dtype)
    return x + noise * self.linear(x)


class DecoderBlock(nnx.Module):

  def __init__(self, in_channels: int, out_channels: int, stride: int, config: AudioVAEConfig, *,
               rngs: nnx.Rngs):
    self.snake = Snake(in_channels, rngs=rngs)
    # Causal: the transposed conv's output is cut on the right only; 2*ceil(s/2) - s%2 == s.
    self.up = WNConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                                right_trim=2 * math.ceil(stride / 2) - stride % 2, rngs=rngs)
    self.noise = NoiseBlock(out_channels, rngs=rngs) if config.use_noise_block else None
    self.res_units = _residual_units(out_channels, config.depthwise, rngs)

  def __call__(self, x, noise_key=None, run=_apply):
    x = run(self.up, self.snake(x))
    if self.noise is not None:
      if noise_key is None:
        raise ValueError("this AudioVAE has noise blocks: pass noise_key to decode")
      x = self.noise(x, noise_key)
    for unit in self.res_units:
      x = unit(x, run)
    return x


class SampleRateCondition(nnx.Module):
  """Per-channel modulation of a decoder block's input, one row per output-rate bucket."""

  def __init__(self, channels: int, buckets: int, cond_type: str, *, rngs: nnx.Rngs):
    self.cond_type = cond_type
    if cond_type == "add":
      self.scale_embed = None
      self.bias_embed = param(rngs.params(), lambda k, s, d: jax.random.normal(k, s, d), (buckets, channels),
                              (None, "conv_out"))
    else:
      self.scale_embed = param(rngs.params(), constant_init(1.0), (buckets, channels), (None, "conv_out"))
      self.bias_embed = param(rngs.params(), constant_init(0.0), (buckets, channels), (None, "conv_out"))

  def __call__(self, x, bucket):
    bias = jnp.take(self.bias_embed[...], bucket, axis=0)[:, None, :]
    if self.scale_embed is None:
      return x + bias
    return x * jnp.take(self.scale_embed[...], bucket, axis=0)[:, None, :] + bias


class Decoder(nnx.Module):

  def __init__(self, config: AudioVAEConfig, *, rngs: nnx.Rngs):
    latent, width = config.latent_dim, config.decoder_dim
    if config.depthwise:
      self.conv_in = WNConv1d(latent, latent, 7, groups=latent, left_pad=6, rngs=rngs)
      self.conv_proj = WNConv1d(latent, width, 1, rngs=rngs)
    else:
      self.conv_in = WNConv1d(latent, width, 7, left_pad=6, rngs=rngs)
      self.conv_proj = None
    blocks, conds = [], []
    buckets = None if config.sr_bin_boundaries is None else len(config.sr_bin_boundaries) + 1
    for i, stride in enumerate(config.decoder_rates):
      c_in, c_out = width // 2**i, width // 2**(i + 1)
      blocks.append(DecoderBlock(c_in, c_out, stride, config, rngs=rngs))
      if buckets is not None:
        conds.append(SampleRateCondition(c_in, buckets, config.cond_type, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.sr_cond = nnx.List(conds) if buckets is not None else None
    out_width = width // 2 ** len(config.decoder_rates)
    self.snake_out = Snake(out_width, rngs=rngs)
    self.conv_out = WNConv1d(out_width, 1, 7, left_pad=6, rngs=rngs)

  def __call__(self, z_btd, bucket=None, noise_key=None, run=_apply):
    x = run(self.conv_in, z_btd)
    if self.conv_proj is not None:
      x = run(self.conv_proj, x)
    keys = [None] * len(self.blocks) if noise_key is None else list(jax.random.split(noise_key, len(self.blocks)))
    for i, block in enumerate(self.blocks):
      if self.sr_cond is not None:
        x = self.sr_cond[i](x, bucket)
      x = block(x, keys[i], run)
    return jnp.tanh(run(self.conv_out, self.snake_out(x)))


class AudioVAE(nnx.Module):
  """Encoder and decoder of VoxCPM's AudioVAE (see the module docstring)."""

  def __init__(self, config: AudioVAEConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = Encoder(config, rngs=rngs)
    self.decoder = Decoder(config, rngs=rngs)

  def pad_to_hop(self, audio_bt: jax.Array) -> jax.Array:
    """Right-pads audio [B, T] with zeros to a multiple of the hop length."""
    hop = self.config.hop_length
    extra = (-audio_bt.shape[-1]) % hop
    return jnp.pad(audio_bt, ((0, 0), (0, extra))) if extra else audio_bt

  def encode_posterior(self, audio_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, log-variance) latents [B, ceil(T / hop), latent_dim] of audio [B, T]."""
    if audio_bt.ndim != 2:
      raise ValueError(f"expected mono audio [batch, samples], got shape {audio_bt.shape}")
    return self.encoder(self.pad_to_hop(audio_bt)[..., None])

  def encode(self, audio_bt: jax.Array) -> jax.Array:
    """Posterior mean [B, ceil(T / hop), latent_dim]; audio at `config.sample_rate`."""
    return self.encode_posterior(audio_bt)[0]

  def sample_rate_bucket(self, sample_rate: int | jax.Array, batch: int) -> jax.Array | None:
    boundaries = self.config.sr_bin_boundaries
    if boundaries is None:
      return None
    rate = jnp.broadcast_to(jnp.asarray(sample_rate, jnp.int32), (batch,))
    # torch.bucketize(right=False): index of the first boundary >= rate.
    return jnp.searchsorted(jnp.asarray(boundaries, jnp.int32), rate, side="left")

  def decode(self, z_btd: jax.Array, sample_rate: int | None = None, noise_key: jax.Array | None = None) -> jax.Array:
    """Audio [B, frames * decode_hop] from latents [B, frames, latent_dim].

    `sample_rate` selects the version-2 decoder's conditioning (default: its output rate).
    """
    return self.decoder(z_btd, self._bucket(sample_rate, z_btd.shape[0]), noise_key)[..., 0]

  def _bucket(self, sample_rate, batch):
    rate = self.config.output_sample_rate if sample_rate is None else sample_rate
    return self.sample_rate_bucket(rate, batch)

  # --- streaming decode ------------------------------------------------------------------------
  def decode_stream_init(self, batch: int, dtype=jnp.float32) -> tuple[jax.Array, ...]:
    """Zero left contexts of every causal conv of the decoder (the state before any audio)."""
    if self.config.use_noise_block:
      raise ValueError("streaming decode does not support noise blocks")
    collector = _ContextShapes()
    dummy = jnp.zeros((batch, 1, self.config.latent_dim), dtype)
    jax.eval_shape(lambda z: self.decoder(z, self._bucket(None, batch), None, collector), dummy)
    return tuple(jnp.zeros(c.shape, c.dtype) for c in collector.contexts)

  def decode_stream(self, z_btd: jax.Array, state: tuple[jax.Array, ...], sample_rate: int | None = None
                    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Decodes the next latent frames [B, F, D] given the state of the frames before them.

    Feeding a latent sequence chunk by chunk gives exactly the chunks of `decode` of the whole
    sequence (the decoder is causal and each conv carries its left context)."""
    streamer = _Streamer(state)
    audio = self.decoder(z_btd, self._bucket(sample_rate, z_btd.shape[0]), None, streamer)[..., 0]
    return audio, tuple(streamer.outgoing)
