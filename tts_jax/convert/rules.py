"""Rules mapping PyTorch state-dict tensors onto our parameters (layout changes, stacking)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  """A PyTorch -> ours layout change: how to convert an array and how its shape maps back."""

  to_ours: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


LAYOUTS: dict[str, Layout] = {
    "same": Layout(lambda a: a, lambda s: s),
    # nn.Linear weight [out, in] is our Dense kernel layout as well
    "linear": Layout(lambda a: a, lambda s: s),
    # Conv1d weight [out, in/groups, k] -> [k, in/groups, out]; weight_g [out, 1, 1] -> [out]
    "conv_v": Layout(lambda a: a.transpose(2, 1, 0), lambda s: (s[2], s[1], s[0])),
    "conv_g": Layout(lambda a: a.reshape(-1), lambda s: (s[0], 1, 1)),
    # ConvTranspose1d weight [in, out, k] -> [k, in, out]; weight_g [in, 1, 1] -> [in]
    "conv_transpose_v": Layout(lambda a: a.transpose(2, 0, 1), lambda s: (s[1], s[2], s[0])),
    "conv_transpose_g": Layout(lambda a: a.reshape(-1), lambda s: (s[0], 1, 1)),
    # Snake alpha [1, C, 1] -> [C]
    "snake_alpha": Layout(lambda a: a.reshape(-1), lambda s: (1, s[0], 1)),
    # LocEnc CLS token [1, 1, 1, H] -> [H]
    "cls_token": Layout(lambda a: a.reshape(-1), lambda s: (1, 1, 1, s[0])),
}


@dataclasses.dataclass(frozen=True)
class Rule:
  torch_key: str
  path: Path
  layout: str = "same"
  layer: int | None = None  # index into the stacked `layers` axis of our parameter
