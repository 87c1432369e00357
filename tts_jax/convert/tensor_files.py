"""Reading tensor files of PyTorch checkpoints into numpy arrays.

* `.safetensors` is parsed here directly (an 8-byte header length, a JSON header, raw bytes),
  memory-mapped, with bf16 via ml_dtypes: no code from the file is ever executed and numpy's
  lack of bfloat16 does not matter. Any inconsistency is reported as a `CheckpointError`
  naming the file.
* `.bin` / `.pth` / `.ckpt` are pickles; they are read with `torch.load(weights_only=True)`
  (which refuses arbitrary objects) and only when PyTorch is installed.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
  """A checkpoint (or model folder) that cannot be imported; the message says what to do."""


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file (read-only, memory-mapped arrays)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise CheckpointError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
      raise CheckpointError(f"{path} is corrupt or truncated: header of {header_len} bytes in a file of {size}")
    try:
      header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(f"{path} is corrupt: its safetensors header is not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise CheckpointError(f"{path} is corrupt: its safetensors header is not a JSON object")
  header.pop("__metadata__", None)
  data_start = 8 + header_len
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start) if size > data_start else np.zeros(0, np.uint8)
  tensors = {}
  for name, info in header.items():
    try:
      dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
      shape = tuple(int(s) for s in info["shape"])
      begin, end = (int(v) for v in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise CheckpointError(f"{path} is corrupt: bad header entry for tensor {name!r}: {info!r}") from None
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - begin != expected or begin < 0 or end > data.size:
      raise CheckpointError(
          f"{path} is corrupt or truncated: tensor {name!r} ({info['dtype']}{list(shape)}) needs bytes "
          f"{begin}..{end} of a {data.size}-byte data section")
    tensors[name] = data[begin:end].view(dtype).reshape(shape)
  return tensors


def read_torch_pickle(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict saved with torch.save, optionally wrapped as {"state_dict": ...}."""
  try:
    import torch
  except ImportError:
    raise CheckpointError(
        f"{path} is a PyTorch pickle; reading it needs PyTorch (CPU build is enough: "
        "`pip install torch`), or convert it to .safetensors first") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or unsafe pickles
    raise CheckpointError(f"could not read {path} as a weights-only PyTorch checkpoint: {e}") from None
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    if value.dtype == torch.bfloat16:
      out[name] = value.float().numpy().astype(ml_dtypes.bfloat16)
    else:
      out[name] = value.numpy()
  return out


def read_tensor_file(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  return read_torch_pickle(path)


def find_tensor_file(folder: str, stems: tuple[str, ...], what: str) -> str:
  """The first existing file among `stems` (tried in order) in `folder`."""
  for name in stems:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise CheckpointError(f"{folder} has no {what}: expected one of {', '.join(stems)}")
