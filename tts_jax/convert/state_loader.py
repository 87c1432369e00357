"""Strict loading of a PyTorch state dict into an NNX module through a list of rules.

Unlike `load_state_dict(strict=False)`, a tensor without a rule, a rule without a tensor, a
wrong shape, or a parameter that no rule fills is an error; all problems of a file are reported
at once, and nothing is built before every check has passed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts_jax.convert.tensor_files import CheckpointError
from tts_jax.convert.rules import LAYOUTS, Path, Rule

_MAX_LISTED = 20


def _listing(title: str, items: list[str]) -> str:
  shown = items[:_MAX_LISTED]
  more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
  return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def _is_stacked(variable) -> bool:
  axes = getattr(variable, "out_sharding", None) or ()
  return len(axes) > 0 and axes[0] == "layers"


def check_and_convert(abstract: nnx.Module, rules: Iterable[Rule], tensors: dict[str, np.ndarray], *,
                      source: str) -> dict[Path, np.ndarray]:
  """Validates `tensors` against `rules` and returns our parameter arrays by path.

  Raises:
    CheckpointError naming every missing, unexpected or mis-shaped tensor and every parameter
    left unfilled.
  """
  rules = list(rules)
  params = {tuple(path): var for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
  by_key = {r.torch_key: r for r in rules}
  missing = sorted(k for k in by_key if k not in tensors)
  unexpected = sorted(k for k in tensors if k not in by_key)
  wrong_shape, no_param, filled = [], [], defaultdict(set)
  for rule in rules:
    if rule.path not in params:
      no_param.append(f"{rule.torch_key} -> {'.'.join(map(str, rule.path))}")
      continue
    shape = tuple(params[rule.path].shape)
    if rule.layer is not None:
      shape = shape[1:]
    want = LAYOUTS[rule.layout].torch_shape(shape)
    if rule.torch_key in tensors:
      got = tuple(tensors[rule.torch_key].shape)
      if got != want:
        wrong_shape.append(f"{rule.torch_key}: checkpoint has {list(got)}, the model needs {list(want)}")
    filled[rule.path].add(rule.layer)
  unfilled = []
  for path, var in params.items():
    needed = set(range(var.shape[0])) if _is_stacked(var) else {None}
    if filled[path] != needed:
      unfilled.append(".".join(map(str, path)))
  problems = []
  if missing:
    problems.append(_listing("missing tensors", missing))
  if unexpected:
    problems.append(_listing("unexpected tensors", unexpected))
  if wrong_shape:
    problems.append(_listing("tensors with the wrong shape", wrong_shape))
  if no_param or unfilled:
    problems.append(_listing("parameters without a source (an importer bug; please report)", no_param + unfilled))
  if problems:
    raise CheckpointError(f"{source} does not match the model described by config.json:\n" + "\n".join(problems))

  arrays: dict[Path, np.ndarray] = {}
  for rule in rules:
    var = params[rule.path]
    value = LAYOUTS[rule.layout].to_ours(np.asarray(tensors[rule.torch_key]))
    if rule.layer is None:
      arrays[rule.path] = value
    else:
      if rule.path not in arrays:
        arrays[rule.path] = np.empty(var.shape, value.dtype)
      arrays[rule.path][rule.layer] = value
  return arrays


def materialize(abstract: nnx.Module, arrays: dict[Path, np.ndarray], param_dtype=jnp.float32,
                cast: Callable[[Path], bool] | None = None) -> nnx.Module:
  """Builds the concrete module from an abstract one and arrays for each of its parameters.

  `cast(path)` says whether a parameter takes `param_dtype` (default: all floating parameters).
  """
  graphdef, state = nnx.split(abstract)
  flat = []
  for path, var in nnx.to_flat_state(state):
    path = tuple(path)
    if isinstance(var, nnx.Param):
      value = arrays[path]
      if np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16":
        dtype = param_dtype if (cast is None or cast(path)) else jnp.float32
        value = jnp.asarray(value, dtype=dtype)
      var = var.replace(jnp.asarray(value))
    else:
      var = var.replace(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), var.get_value()))
    flat.append((path, var))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
