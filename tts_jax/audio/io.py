"""Reading and writing audio files: any format soundfile reads, mixed to mono, resampled with soxr."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf


class AudioFileError(ValueError):
  """An audio file that cannot be used; the message names it."""


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
  """High-quality resampling (soxr, the resampler behind librosa.load) of mono float audio."""
  if orig_rate == target_rate:
    return audio
  import soxr

  return soxr.resample(audio, orig_rate, target_rate, quality="HQ").astype(np.float32)


def load_audio(path: str, target_rate: int) -> np.ndarray:
  """Mono float32 samples of `path` at `target_rate`."""
  if not os.path.isfile(path):
    raise AudioFileError(f"audio file {path} does not exist")
  try:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
  except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
    raise AudioFileError(f"cannot read audio file {path}: {e}") from None
  if data.shape[0] == 0:
    raise AudioFileError(f"audio file {path} has no samples")
  mono = data.mean(axis=1)
  if not np.all(np.isfinite(mono)):
    raise AudioFileError(f"audio file {path} contains non-finite samples")
  return resample(mono, rate, target_rate)


def write_audio(path: str, audio: np.ndarray, rate: int) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  sf.write(path, np.asarray(audio, np.float32), rate, subtype="PCM_16")
