"""Dense (affine) layer and token embedding with logical axis names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tts_jax.nn.params import Axes, normal_init, param, torch_linear_init


class Dense(nnx.Module):
  """y = x @ kernel.T + bias, with `kernel` [out_features, in_features] (PyTorch's layout).

  The weight-major layout with the weight as the left operand lets XLA:CPU use its efficient
  GEMM for the skinny activations of autoregressive decoding (1.5-2x faster per decode step
  than x @ W[in, out] in benchmarks/RESULTS.md); compilers for GPU/TPU choose layouts freely.
  `axes` names the logical axes in (input, output) order, as for a math-style [in, out] matrix.
  Computation runs in the dtype of the parameters and input (cast the parameter tree to bf16
  for bf16 inference); no silent up- or down-casting happens here.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      use_bias: bool = True,
      axes: Axes = ("embed", "mlp"),
      rngs: nnx.Rngs,
      param_dtype: jnp.dtype = jnp.float32,
  ):
    self.in_features = in_features
    self.out_features = out_features
    init = torch_linear_init(in_features)
    self.kernel = param(rngs.params(), init, (out_features, in_features), tuple(axes)[::-1], param_dtype)
    self.bias = param(rngs.params(), init, (out_features,), axes[-1:], param_dtype) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.dot_general(self.kernel[...], x, (((1,), (x.ndim - 1,)), ((), ())))  # [out, ...]
    y = jnp.moveaxis(y, 0, -1)
    if self.bias is not None:
      y = y + self.bias[...]
    return y


class Embed(nnx.Module):
  """Token embedding table [vocab_size, features], N(0, 1) init as in PyTorch."""

  def __init__(
      self,
      vocab_size: int,
      features: int,
      *,
      rngs: nnx.Rngs,
      param_dtype: jnp.dtype = jnp.float32,
  ):
    self.vocab_size = vocab_size
    self.embedding = param(rngs.params(), normal_init(1.0), (vocab_size, features), ("vocab", "embed"), param_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0)
