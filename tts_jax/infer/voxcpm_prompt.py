"""VoxCPM prompt sequences: the reference's layouts for every cloning mode, and batching them.

One sequence interleaves nothing: each position is a text token or a latent patch (masks say
which). With ids 101 = audio start, 103/104 = reference start/end:

  zero-shot / voice design   [text, 101]
  continuation               [prompt_text + text, 101, prompt patches]
  reference (VoxCPM2)        [103, reference patches, 104, text, 101]
  both (VoxCPM2)             [103, reference patches, 104, prompt_text + text, 101, prompt patches]

Continuation audio is left-padded to whole patches (the real audio ends where generation
starts), reference audio right-padded. In continuation modes the last prompt patches (2 for
VoxCPM v1, 3 for VoxCPM2) are decoded with the generated ones as left context of the causal
VAE decoder and cut off afterwards, as the reference does.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tts_jax.models.voxcpm.config import (AUDIO_START_TOKEN, REF_AUDIO_END_TOKEN, REF_AUDIO_START_TOKEN,
                                          VoxCPMConfig)


@dataclasses.dataclass
class PromptSequence:
  tokens: np.ndarray  # [T] int32
  text_mask: np.ndarray  # [T] int32
  audio_mask: np.ndarray  # [T] int32
  feats: np.ndarray  # [T, P, D] float32
  target_tokens: int  # tokens of the text to speak (for the length cap and bad-case check)
  decode_context: np.ndarray  # [C, P, D] prompt patches decoded before the generated ones

  @property
  def length(self) -> int:
    return len(self.tokens)


def normalize_text(text: str) -> str:
  """Newlines to spaces and runs of whitespace to one space, as the reference does."""
  return re.sub(r"\s+", " ", text.replace("\n", " "))


def decode_context_patches(config: VoxCPMConfig) -> int:
  return 3 if config.version == 2 else 2


def build_sequence(tokenize, config: VoxCPMConfig, text: str, prompt_text: str | None = None,
                   prompt_latents: np.ndarray | None = None,
                   reference_latents: np.ndarray | None = None) -> PromptSequence:
  """The prompt sequence of one utterance; latents are [patches, P, D]."""
  p, d = config.patch_size, config.feat_dim
  target = tokenize(text)
  ids = list(tokenize(prompt_text + text) if prompt_latents is not None else target) + [AUDIO_START_TOKEN]
  tokens, text_mask, audio_mask = list(ids), [1] * len(ids), [0] * len(ids)
  feats = [np.zeros((len(ids), p, d), np.float32)]
  context = np.zeros((0, p, d), np.float32)
  if prompt_latents is not None:
    n = len(prompt_latents)
    tokens += [0] * n
    text_mask += [0] * n
    audio_mask += [1] * n
    feats.append(np.asarray(prompt_latents, np.float32))
    context = np.asarray(prompt_latents[n - min(decode_context_patches(config), n):], np.float32)
  if reference_latents is not None:
    n = len(reference_latents)
    tokens = [REF_AUDIO_START_TOKEN] + [0] * n + [REF_AUDIO_END_TOKEN] + tokens
    text_mask = [1] + [0] * n + [1] + text_mask
    audio_mask = [0] + [1] * n + [0] + audio_mask
    zero = np.zeros((1, p, d), np.float32)
    feats = [zero, np.asarray(reference_latents, np.float32), zero] + feats
  return PromptSequence(tokens=np.asarray(tokens, np.int32), text_mask=np.asarray(text_mask, np.int32),
                        audio_mask=np.asarray(audio_mask, np.int32), feats=np.concatenate(feats),
                        target_tokens=len(target), decode_context=context)


def left_pad_batch(sequences: list[PromptSequence], length: int) -> dict[str, np.ndarray]:
  """Stacks sequences left-padded to `length`: tokens, masks, feats and `left_pad` [B]."""
  b = len(sequences)
  p, d = sequences[0].feats.shape[1:]
  out = dict(tokens=np.zeros((b, length), np.int32), text_mask=np.zeros((b, length), np.int32),
             audio_mask=np.zeros((b, length), np.int32), feats=np.zeros((b, length, p, d), np.float32),
             left_pad=np.zeros((b,), np.int32))
  for i, seq in enumerate(sequences):
    pad = length - seq.length
    out["tokens"][i, pad:] = seq.tokens
    out["text_mask"][i, pad:] = seq.text_mask
    out["audio_mask"][i, pad:] = seq.audio_mask
    out["feats"][i, pad:] = seq.feats
    out["left_pad"][i] = pad
  return out


def bucket(n: int, minimum: int = 16) -> int:
  """The compile-time size for a dynamic size n: the next power of two, at least `minimum`."""
  size = minimum
  while size < n:
    size *= 2
  return size
