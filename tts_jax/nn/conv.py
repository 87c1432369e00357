"""1-D convolutions for audio codecs, channels-last ([batch, time, channels]).

* Weight normalisation (`W = g * v / ||v||`) is kept as two parameters, as in PyTorch's legacy
  `weight_norm`, so official `weight_g`/`weight_v` tensors load as they are and codec training
  optimises the same parametrisation.
* Causality is explicit left padding; a conv never pads on its own.
* Depthwise convolutions are K shifted multiply-adds instead of a grouped convolution: XLA's
  grouped-conv gradients are slow on CPU and the shifted form is as fast as anything on GPU/TPU.
* Transposed convolutions use the polyphase form (one dense conv over frames producing
  `stride` output samples per frame, then a reshape) instead of a zero-stuffed convolution,
  which would multiply by zeros `stride - 1` times out of `stride`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.params import constant_init, param, torch_linear_init

_DIMENSION_NUMBERS = ("NWC", "WIO", "NWC")


def weight_normalize(v: jax.Array, g: jax.Array, norm_axes: tuple[int, ...]) -> jax.Array:
  """g * v / ||v||, the norm taken over `norm_axes` (g broadcasts over them)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=norm_axes, keepdims=True))
  return v * (jnp.expand_dims(g, norm_axes) / norm)


def depthwise_conv1d(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """Valid depthwise convolution (cross-correlation) as shifted multiply-adds.

  Args:
    x: [B, T, C], already padded.
    kernel: [K, C].
  Returns:
    [B, T - (K - 1) * dilation, C].
  """
  taps = kernel.shape[0]
  out_len = x.shape[1] - (taps - 1) * dilation
  if out_len < 0:
    raise ValueError(f"input of {x.shape[1]} frames is shorter than the receptive field")
  y = x[:, :out_len] * kernel[0]
  for k in range(1, taps):
    start = k * dilation
    y = y + x[:, start:start + out_len] * kernel[k]
  return y


def conv1d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, dilation: int = 1) -> jax.Array:
  """Valid dense convolution, kernel [K, C_in, C_out]."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding="VALID", rhs_dilation=(dilation,),
      dimension_numbers=_DIMENSION_NUMBERS)


def polyphase_kernel(kernel: jax.Array, stride: int) -> tuple[jax.Array, int]:
  """Rewrites a transposed-conv kernel [K, C_in, C_out] as a frame-rate conv kernel.

  Output block m (samples m*s .. m*s+s-1) = sum_r x[m - r] @ kernel[r*s : r*s + s], i.e. a causal
  conv over input frames with `phases` taps producing s * C_out channels ordered (sample, out).
  Returns the kernel [phases, C_in, s * C_out] and `phases`.
  """
  taps, c_in, c_out = kernel.shape
  phases = -(-taps // stride)
  padded = jnp.pad(kernel, ((0, phases * stride - taps), (0, 0), (0, 0)))
  poly = padded.reshape(phases, stride, c_in, c_out)[::-1]
  return poly.transpose(0, 2, 1, 3).reshape(phases, c_in, stride * c_out), phases


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """PyTorch ConvTranspose1d (padding 0) in polyphase form.

  Args:
    x: [B, L, C_in].
    kernel: [K, C_in, C_out]; input frame i adds x[i] @ kernel[k] to output sample i*stride + k.
  Returns:
    [B, (L - 1) * stride + K, C_out].
  """
  poly, phases = polyphase_kernel(kernel, stride)
  frames = jnp.pad(x, ((0, 0), (phases - 1, phases - 1), (0, 0)))
  y = conv1d(frames, poly).reshape(x.shape[0], -1, kernel.shape[2])
  return y[:, :(x.shape[1] - 1) * stride + kernel.shape[0]]


class WNConv1d(nnx.Module):
  """Weight-normalised Conv1d with explicit left (causal) padding.

  Parameters follow PyTorch's layout semantics: `weight_v` [K, C_in/groups, C_out] normalised
  per output channel, `weight_g` [C_out]. `groups` is 1 or C_in == C_out (depthwise).
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               dilation: int = 1, groups: int = 1, left_pad: int = 0, use_bias: bool = True,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
      raise ValueError(f"only dense (groups=1) or depthwise convolutions are supported, got groups={groups} "
                       f"for {in_channels}->{out_channels} channels")
    self.depthwise = groups > 1
    self.in_channels = in_channels
    self.stride, self.dilation, self.left_pad = stride, dilation, left_pad
    fan_in = (in_channels // groups) * kernel_size
    init = torch_linear_init(fan_in)
    v_shape = (kernel_size, in_channels // groups, out_channels)
    self.weight_v = param(rngs.params(), init, v_shape, ("conv_kernel", "conv_in", "conv_out"), param_dtype)
    # g starts at ||v||, so that the initial weight equals v (PyTorch's weight_norm does the same).
    self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(self.weight_v[...]), axis=(0, 1))),
                              out_sharding=("conv_out",), eager_sharding=False)
    self.bias = param(rngs.params(), init, (out_channels,), ("conv_out",), param_dtype) if use_bias else None

  def weight(self) -> jax.Array:
    return weight_normalize(self.weight_v[...], self.weight_g[...], (0, 1))

  def _valid(self, x: jax.Array) -> jax.Array:
    """The convolution of an input that already holds its left context."""
    w = self.weight()
    if self.depthwise:
      if self.stride != 1:
        raise ValueError("strided depthwise convolution is not supported")
      y = depthwise_conv1d(x, w[:, 0, :], self.dilation)
    else:
      y = conv1d(x, w, stride=self.stride, dilation=self.dilation)
    if self.bias is not None:
      y = y + self.bias[...]
    return y

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.left_pad:
      x = jnp.pad(x, ((0, 0), (self.left_pad, 0), (0, 0)))
    return self._valid(x)

  def stream(self, x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Causal streaming: `context` [B, left_pad, C_in] holds the previous inputs (zeros at the
    start). Chunks fed in order give exactly the full call's output, concatenated."""
    if self.stride != 1:
      raise ValueError("streaming needs stride 1")
    full = jnp.concatenate([context.astype(x.dtype), x], axis=1)
    return self._valid(full), full[:, full.shape[1] - self.left_pad:]

  def stream_context(self, batch: int, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros((batch, self.left_pad, self.in_channels), dtype)


class WNConvTranspose1d(nnx.Module):
  """Weight-normalised ConvTranspose1d whose output is trimmed by `right_trim` samples.

  PyTorch's weight_norm on a transposed conv normalises over dim 0 of [C_in, C_out, K], i.e. per
  *input* channel: `weight_g` is [C_in] here and `weight_v` [K, C_in, C_out].
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int,
               right_trim: int = 0, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.in_channels, self.stride, self.right_trim = in_channels, stride, right_trim
    # PyTorch computes fan-in from weight.size(1) * K = C_out * K for transposed convs.
    init = torch_linear_init(out_channels * kernel_size)
    v_shape = (kernel_size, in_channels, out_channels)
    self.weight_v = param(rngs.params(), init, v_shape, ("conv_kernel", "conv_in", "conv_out"), param_dtype)
    self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(self.weight_v[...]), axis=(0, 2))),
                              out_sharding=("conv_in",), eager_sharding=False)
    self.bias = param(rngs.params(), init, (out_channels,), ("conv_out",), param_dtype)

  def weight(self) -> jax.Array:
    return weight_normalize(self.weight_v[...], self.weight_g[...], (0, 2))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv_transpose1d(x, self.weight(), self.stride) + self.bias[...]
    if self.right_trim:
      y = y[:, :y.shape[1] - self.right_trim]
    return y

  def _phases(self) -> int:
    return -(-self.weight_v.shape[0] // self.stride)

  def stream(self, x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Causal streaming with `context` [B, phases - 1, C_in], the previous input frames. Needs the
    causal trim (kernel - right_trim == stride), so that L frames give exactly L * stride samples."""
    if self.weight_v.shape[0] - self.right_trim != self.stride:
      raise ValueError("streaming a transposed conv needs kernel_size - right_trim == stride")
    poly, phases = polyphase_kernel(self.weight(), self.stride)
    frames = jnp.concatenate([context.astype(x.dtype), x], axis=1)
    y = conv1d(frames, poly).reshape(x.shape[0], -1, self.bias.shape[0]) + self.bias[...]
    return y, frames[:, frames.shape[1] - (phases - 1):]

  def stream_context(self, batch: int, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros((batch, self._phases() - 1, self.in_channels), dtype)


def snake(x: jax.Array, alpha: jax.Array) -> jax.Array:
  """x + sin^2(alpha x) / (alpha + 1e-9), per channel."""
  return x + jnp.reciprocal(alpha + 1e-9) * jnp.square(jnp.sin(alpha * x))


class Snake(nnx.Module):

  def __init__(self, channels: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.alpha = param(rngs.params(), constant_init(1.0), (channels,), ("conv_out",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return snake(x, self.alpha[...])
