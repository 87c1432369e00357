"""Parameter creation with logical axis names.

Every parameter of the project is created through `param`, so that each one carries a tuple of
logical axis names (`embed`, `heads`, `kv_heads`, `mlp`, `vocab`, `layers`, ...) in its
`out_sharding` metadata. The training code maps those names onto a device mesh with a rules
table; the model code never mentions devices.

Eager sharding is switched off per parameter: Flax would otherwise try to shard at creation
time, which needs a mesh and a rules table that model code must not depend on.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = Sequence[str | None]
Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(
    key: jax.Array,
    init: Initializer,
    shape: Sequence[int],
    axes: Axes,
    dtype: jnp.dtype = jnp.float32,
) -> nnx.Param:
  """Creates an `nnx.Param` of `shape` annotated with logical `axes`."""
  if len(axes) != len(shape):
    raise ValueError(f"parameter of shape {tuple(shape)} needs {len(shape)} axis names, got {tuple(axes)}")
  return nnx.Param(init(key, tuple(shape), dtype), out_sharding=tuple(axes), eager_sharding=False)


def torch_linear_init(fan_in: int) -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear/Conv weights and biases.

  Models trained from scratch here start from the same distribution as the reference code.
  """
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def normal_init(stddev: float = 1.0) -> Initializer:
  def init(key, shape, dtype):
    return stddev * jax.random.normal(key, shape, dtype)

  return init


def constant_init(value: float) -> Initializer:
  def init(key, shape, dtype):
    del key
    return jnp.full(shape, value, dtype)

  return init


def cast_floating_params(module, dtype) -> None:
  """Casts every floating-point parameter of an NNX module to `dtype`, in place."""
  state = nnx.state(module, nnx.Param)
  nnx.update(module, jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state))
