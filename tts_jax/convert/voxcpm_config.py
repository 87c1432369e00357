"""Official VoxCPM `config.json` -> `VoxCPMConfig`, with the reference's inheritance rules.

The reference derives RALM, LocEnc and LocDiT configs by copying `lm_config` and overriding a
few fields, so they inherit the number of KV heads, the RMSNorm epsilon, the (Long)RoPE settings
and the muP switch of the TSLM; `kv_channels` of LocEnc/LocDiT comes from their own section.
Defaults are the reference's pydantic defaults (note: `use_mup` defaults to True there).
"""

from __future__ import annotations

import json
import math
import os

from tts_jax.codecs.audio_vae import AudioVAEConfig
from tts_jax.convert.tensor_files import CheckpointError
from tts_jax.models.flow.cfm import FlowMatchingConfig
from tts_jax.models.voxcpm.config import VoxCPMConfig
from tts_jax.nn.rope import RopeConfig
from tts_jax.nn.transformer import TransformerConfig

_LM_REQUIRED = ("hidden_size", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "vocab_size", "rope_theta")

_VERSION_DEFAULTS = {
    1: dict(patch_size=2, residual_lm_num_layers=6, scalar_quantization_latent_dim=256, max_length=4096),
    2: dict(patch_size=4, residual_lm_num_layers=8, scalar_quantization_latent_dim=512, max_length=8192),
}

_VAE_DEFAULTS = {
    1: dict(encoder_dim=128, encoder_rates=[2, 5, 8, 8], latent_dim=64, decoder_dim=1536,
            decoder_rates=[8, 8, 5, 2], depthwise=True, sample_rate=16000, use_noise_block=False),
    2: dict(encoder_dim=128, encoder_rates=[2, 5, 8, 8], latent_dim=64, decoder_dim=2048,
            decoder_rates=[8, 6, 5, 2, 2, 2], depthwise=True, sample_rate=16000, out_sample_rate=48000,
            use_noise_block=False, sr_bin_boundaries=[20000, 30000, 40000], cond_type="scale_bias",
            cond_dim=128, cond_out_layer=False),
}


def architecture_version(raw: dict) -> int:
  arch = str(raw.get("architecture", "voxcpm")).lower()
  if arch == "voxcpm":
    return 1
  if arch == "voxcpm2":
    return 2
  raise CheckpointError(f"unsupported VoxCPM architecture {arch!r} in config.json (expected 'voxcpm' or 'voxcpm2')")


def _rope(lm: dict) -> RopeConfig | None:
  if lm.get("no_rope", False):
    return None
  scaling = lm.get("rope_scaling")
  base = dict(theta=float(lm["rope_theta"]), max_position_embeddings=int(lm["max_position_embeddings"]))
  if scaling is None:
    return RopeConfig(**base)
  kind = scaling.get("type", scaling.get("rope_type"))
  if kind not in ("longrope", "su"):
    raise CheckpointError(f"lm_config.rope_scaling.type {kind!r} is not supported (MiniCPM uses 'longrope')")
  try:
    return RopeConfig(**base, original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
                      short_factor=tuple(scaling["short_factor"]), long_factor=tuple(scaling["long_factor"]))
  except KeyError as e:
    raise CheckpointError(f"lm_config.rope_scaling lacks {e.args[0]!r}") from None


def _stack(lm: dict, *, hidden, intermediate, layers, heads, head_dim, vocab, rope) -> TransformerConfig:
  use_mup = bool(lm.get("use_mup", True))
  scale = float(lm.get("scale_depth", 1.0)) / math.sqrt(layers) if use_mup else 1.0
  return TransformerConfig(hidden_size=int(hidden), intermediate_size=int(intermediate), num_layers=int(layers),
                           num_heads=int(heads), num_kv_heads=int(lm["num_key_value_heads"]),
                           head_dim=None if head_dim is None else int(head_dim), rms_norm_eps=float(lm["rms_norm_eps"]),
                           rope=rope, vocab_size=int(vocab), residual_scale=scale)


def _sub_stack(lm: dict, section: dict, rope) -> TransformerConfig:
  return _stack(lm, hidden=section.get("hidden_dim", 1024), intermediate=section.get("ffn_dim", 4096),
                layers=section.get("num_layers", 4), heads=section.get("num_heads", 16),
                head_dim=section.get("kv_channels"), vocab=0, rope=rope)


def audio_vae_config_from_official(raw: dict | None, version: int) -> AudioVAEConfig:
  values = dict(_VAE_DEFAULTS[version])
  values.update({k: v for k, v in (raw or {}).items() if k in values})
  if values.pop("cond_out_layer", False):
    raise CheckpointError("audio_vae_config.cond_out_layer=True is not supported (no released model uses it)")
  values.pop("cond_dim", None)
  if values.get("latent_dim") is None:
    values["latent_dim"] = values["encoder_dim"] * 2 ** len(values["encoder_rates"])
  return AudioVAEConfig(version=version, **values)


def voxcpm_config_from_official(raw: dict) -> VoxCPMConfig:
  """Parses the dict of an official config.json."""
  version = architecture_version(raw)
  if "lm_config" not in raw:
    raise CheckpointError("config.json has no 'lm_config' section")
  lm = raw["lm_config"]
  missing = [k for k in _LM_REQUIRED if k not in lm]
  if missing:
    raise CheckpointError(f"config.json lm_config lacks {', '.join(missing)}")
  for section in ("encoder_config", "dit_config"):
    if section not in raw:
      raise CheckpointError(f"config.json has no {section!r} section")
  dit = raw["dit_config"]
  mean_mode = raw.get("dit_mean_mode", False) if version == 1 else dit.get("dit_mean_mode", False)
  if mean_mode:
    raise CheckpointError("dit_mean_mode=True (MeanFlow sampling) is not supported; no released VoxCPM uses it")
  defaults = _VERSION_DEFAULTS[version]
  rope = _rope(lm)
  # v1 copies lm_config as is; v2 overrides its `no_rope` with `residual_lm_no_rope`.
  residual_rope = _rope({**lm, "no_rope": raw.get("residual_lm_no_rope", False)}) if version == 2 else rope
  cfm = dit.get("cfm_config", {}) or {}
  use_mup = bool(lm.get("use_mup", True))
  try:
    return VoxCPMConfig(
        version=version,
        lm=_stack(lm, hidden=lm["hidden_size"], intermediate=lm["intermediate_size"], layers=lm["num_hidden_layers"],
                  heads=lm["num_attention_heads"], head_dim=lm.get("kv_channels"), vocab=lm["vocab_size"], rope=rope),
        residual_lm=_stack(lm, hidden=lm["hidden_size"], intermediate=lm["intermediate_size"],
                           layers=raw.get("residual_lm_num_layers", defaults["residual_lm_num_layers"]),
                           heads=lm["num_attention_heads"], head_dim=lm.get("kv_channels"), vocab=0, rope=residual_rope),
        encoder=_sub_stack(lm, raw["encoder_config"], rope),
        dit=_sub_stack(lm, dit, rope),
        audio_vae=audio_vae_config_from_official(raw.get("audio_vae_config"), version),
        patch_size=int(raw.get("patch_size", defaults["patch_size"])),
        feat_dim=int(raw.get("feat_dim", 64)),
        fsq_latent_dim=int(raw.get("scalar_quantization_latent_dim", defaults["scalar_quantization_latent_dim"])),
        fsq_scale=int(raw.get("scalar_quantization_scale", 9)),
        text_embed_scale=float(lm.get("scale_emb", 1.0)) if use_mup else 1.0,
        max_length=int(raw.get("max_length", defaults["max_length"])),
        flow=FlowMatchingConfig(condition_drop_rate=float(cfm.get("training_cfg_rate", 0.1)),
                                time_distribution=str(cfm.get("t_scheduler", "log-norm"))),
    )
  except (TypeError, ValueError) as e:
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(f"config.json describes an invalid VoxCPM: {e}") from None


def read_voxcpm_config(model_dir: str) -> tuple[VoxCPMConfig, dict]:
  """(parsed config, raw dict) of `model_dir/config.json`."""
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{model_dir} has no config.json; is it a VoxCPM model folder?")
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(raw, dict):
    raise CheckpointError(f"{path} must hold a JSON object")
  return voxcpm_config_from_official(raw), raw
