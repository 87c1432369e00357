"""Merging LoRA adapters (`<layer>.lora_A` [r, in], `<layer>.lora_B` [out, r]) into base weights.

W' = W + (alpha / r) * B @ A, computed in float32 on the PyTorch-layout tensors before import.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tts_jax.convert.tensor_files import CheckpointError, read_tensor_file

LORA_SUFFIXES = (".lora_A", ".lora_B")


def split_lora(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(base tensors, LoRA tensors) of one state dict."""
  lora = {k: v for k, v in tensors.items() if k.endswith(LORA_SUFFIXES)}
  return {k: v for k, v in tensors.items() if k not in lora}, lora


def read_lora_alpha(folder: str) -> float | None:
  """`alpha` from a `lora_config.json` in `folder` (top level or under "lora_config"), if any."""
  path = os.path.join(folder, "lora_config.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON: {e}") from None
  for section in (raw, raw.get("lora_config") or {}):
    for key in ("alpha", "lora_alpha"):
      if key in section:
        return float(section[key])
  raise CheckpointError(f"{path} does not give the LoRA alpha (expected a key 'alpha')")


def read_lora_file(path: str) -> dict[str, np.ndarray]:
  """LoRA tensors from a file, or from `lora_weights.safetensors`/`.ckpt` in a folder."""
  if os.path.isdir(path):
    for name in ("lora_weights.safetensors", "lora_weights.ckpt", "lora_weights.pth"):
      if os.path.isfile(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      raise CheckpointError(f"{path} has no lora_weights.safetensors / lora_weights.ckpt")
  if not os.path.isfile(path):
    raise CheckpointError(f"LoRA weights {path} do not exist")
  tensors = read_tensor_file(path)
  base, lora = split_lora(tensors)
  if base:
    raise CheckpointError(f"{path} holds non-LoRA tensors, e.g. {sorted(base)[:3]}; expected only *.lora_A/*.lora_B")
  if not lora:
    raise CheckpointError(f"{path} holds no LoRA tensors (*.lora_A / *.lora_B)")
  return lora


def merge_lora(base: dict[str, np.ndarray], lora: dict[str, np.ndarray], alpha: float | None, *,
               source: str) -> dict[str, np.ndarray]:
  """Returns a copy of `base` with every adapter of `lora` merged into its `.weight`."""
  if not lora:
    return base
  if alpha is None:
    raise CheckpointError(f"{source} has LoRA weights but no alpha: put a lora_config.json with "
                          "'alpha' next to them or pass lora_alpha explicitly")
  prefixes = sorted({k.rsplit(".", 1)[0] for k in lora})
  problems, merged = [], dict(base)
  for prefix in prefixes:
    a, b, w = lora.get(prefix + ".lora_A"), lora.get(prefix + ".lora_B"), base.get(prefix + ".weight")
    if a is None or b is None:
      problems.append(f"{prefix}: has only one of lora_A / lora_B")
      continue
    if w is None:
      problems.append(f"{prefix}: no base tensor {prefix}.weight to merge into")
      continue
    rank = a.shape[0]
    if a.ndim != 2 or b.ndim != 2 or b.shape[1] != rank or (b.shape[0], a.shape[1]) != tuple(w.shape):
      problems.append(f"{prefix}: lora_A {list(a.shape)} / lora_B {list(b.shape)} do not fit weight {list(w.shape)}")
      continue
    delta = (alpha / rank) * (b.astype(np.float32) @ a.astype(np.float32))
    merged[prefix + ".weight"] = (w.astype(np.float32) + delta).astype(np.float32)
  if problems:
    raise CheckpointError(f"cannot merge the LoRA weights of {source}:\n" + "\n".join(f"  {p}" for p in problems))
  return merged
