"""Configuration of a VoxCPM model (both generations)."""

from __future__ import annotations

import dataclasses

from tts_jax.codecs.audio_vae import AudioVAEConfig
from tts_jax.models.flow.cfm import FlowMatchingConfig
from tts_jax.nn.transformer import TransformerConfig

AUDIO_START_TOKEN = 101
AUDIO_END_TOKEN = 102
REF_AUDIO_START_TOKEN = 103
REF_AUDIO_END_TOKEN = 104


@dataclasses.dataclass(frozen=True)
class VoxCPMConfig:
  """Everything needed to build VoxCPM and its AudioVAE.

  Attributes:
    version: 1 for VoxCPM-0.5B and VoxCPM1.5, 2 for VoxCPM2. Version 2 fuses the RALM input by
      concatenation + projection (version 1 adds), and gives LocDiT two conditioning tokens
      (version 1 one, `mu + t`).
    lm: text-semantic LM (TSLM), the only stack with a token embedding.
    residual_lm: residual acoustic LM (RALM).
    encoder: LocEnc, bidirectional over [CLS, patch frames].
    dit: LocDiT, bidirectional over [conditioning, previous patch, noisy patch].
    patch_size: latent frames per autoregressive step.
    feat_dim: latent size of the AudioVAE.
    fsq_latent_dim, fsq_scale: FSQ bottleneck width and levels per side (2 * scale + 1 levels).
    text_embed_scale: multiplier of text embeddings (MiniCPM `scale_emb` when `use_mup`, else 1).
    max_length: KV cache length of the reference implementation (the longest sequence).
  """

  version: int
  lm: TransformerConfig
  residual_lm: TransformerConfig
  encoder: TransformerConfig
  dit: TransformerConfig
  audio_vae: AudioVAEConfig
  patch_size: int = 2
  feat_dim: int = 64
  fsq_latent_dim: int = 256
  fsq_scale: int = 9
  text_embed_scale: float = 1.0
  max_length: int = 4096
  flow: FlowMatchingConfig = FlowMatchingConfig()

  def __post_init__(self):
    if self.version not in (1, 2):
      raise ValueError(f"VoxCPM version must be 1 or 2, got {self.version}")
    if self.lm.vocab_size <= 0:
      raise ValueError("the TSLM needs a vocabulary (lm vocab_size > 0)")
    for name in ("residual_lm", "encoder", "dit"):
      if getattr(self, name).vocab_size:
        raise ValueError(f"{name} must not have a token embedding (vocab_size 0)")
    if self.residual_lm.hidden_size != self.lm.hidden_size:
      raise ValueError("residual_lm and lm must have the same hidden size")
    if self.feat_dim != self.audio_vae.latent_dim:
      raise ValueError(f"feat_dim={self.feat_dim} must equal the AudioVAE latent_dim={self.audio_vae.latent_dim}")
    for name in ("lm", "residual_lm", "encoder", "dit"):
      getattr(self, name).validate(name)

  @property
  def fuse_residual_by_concat(self) -> bool:
    return self.version == 2

  @property
  def dit_condition_tokens(self) -> int:
    return 2 if self.version == 2 else 1

  @property
  def samples_per_patch(self) -> int:
    """Encoder-rate audio samples per autoregressive step."""
    return self.patch_size * self.audio_vae.hop_length

  @property
  def output_samples_per_patch(self) -> int:
    return self.patch_size * self.audio_vae.decode_hop_length
