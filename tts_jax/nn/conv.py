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


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """PyTorch ConvTranspose1d (padding 0) in polyphase form.

  Args:
    x: [B, L, C_in].
    kernel: [K, C_in, C_out]; input frame i adds x[i] @ kernel[k] to output sample i*stride + k.
  Returns:
    [B, (L - 1) * stride + K, C_out].
  """
  taps, c_in, c_out = kernel.shape
  phases = -(-taps // stride)  # frames of input each output block depends on
  padded = jnp.pad(kernel, ((0, phases * stride - taps), (0, 0), (0, 0)))
  # Output block m (samples m*s .. m*s+s-1) = sum_r x[m - r] @ kernel[r*s : r*s + s]: a causal
  # conv over frames whose tap q = phases-1-r, producing s * C_out channels ordered (sample, out).
  poly = padded.reshape(phases, stride, c_in, c_out)[::-1]
  poly = poly.transpose(0, 2, 1, 3).reshape(phases, c_in, stride * c_out)
  frames = jnp.pad(x, ((0, 0), (phases - 1, phases - 1), (0, 0)))
  blocks = conv1d(frames, poly)  # [B, L + phases - 1, s * C_out]
  batch = x.shape[0]
  y = blocks.reshape(batch, -1, c_out)
  return y[:, :(x.shape[1] - 1) * stride + taps]


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

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.left_pad:
      x = jnp.pad(x, ((0, 0), (self.left_pad, 0), (0, 0)))
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


class WNConvTranspose1d(nnx.Module):
  """Weight-normalised ConvTranspose1d whose output is trimmed by `right_trim` samples.

  PyTorch's weight_norm on a transposed conv normalises over dim 0 of [C_in, C_out, K], i.e. per
  *input* channel: `weight_g` is [C_in] here and `weight_v` [K, C_in, C_out].
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int,
               right_trim: int = 0, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.stride, self.right_trim = stride, right_trim
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


def snake(x: jax.Array, alpha: jax.Array) -> jax.Array:
  """x + sin^2(alpha x) / (alpha + 1e-9), per channel."""
  return x + jnp.reciprocal(alpha + 1e-9) * jnp.square(jnp.sin(alpha * x))


class Snake(nnx.Module):

  def __init__(self, channels: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.alpha = param(rngs.params(), constant_init(1.0), (channels,), ("conv_out",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return snake(x, self.alpha[...])
