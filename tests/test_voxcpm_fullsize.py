"""Released full-size topologies, built abstractly (no memory), against the published counts and
against the reference implementation's own state-dict keys and shapes (built on the meta device)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flax import nnx

from tts_jax.codecs.audio_vae import AudioVAE
from tts_jax.convert.rules import LAYOUTS
from tts_jax.convert.voxcpm_keys import audio_vae_buffer_keys, audio_vae_rules, model_rules
from tts_jax.convert.voxcpm_presets import preset_config, preset_config_dict
from tts_jax.models.voxcpm.model import VoxCPM
from voxcpm_reference import import_reference

# (main params, main tensors, VAE params) of the released checkpoints.
PUBLISHED = {"voxcpm-0.5b": (652_287_296, 377, 75_355_202), "voxcpm2": (2_290_004_544, 577, 94_213_954)}


def _abstract(name):
  config = preset_config(name)
  model = nnx.eval_shape(lambda: VoxCPM(config, rngs=nnx.Rngs(0)))
  vae = nnx.eval_shape(lambda: AudioVAE(config.audio_vae, rngs=nnx.Rngs(0)))
  return config, model, vae


def _param_count(module) -> int:
  return sum(math.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(module, nnx.Param)))


def _expected_torch_shapes(module, rules) -> dict[str, tuple[int, ...]]:
  params = {tuple(p): v for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}
  out = {}
  for rule in rules:
    shape = tuple(params[rule.path].shape)
    out[rule.torch_key] = LAYOUTS[rule.layout].torch_shape(shape[1:] if rule.layer is not None else shape)
  return out


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_and_tensor_counts(name):
  main_params, main_tensors, vae_params = PUBLISHED[name]
  config, model, vae = _abstract(name)
  assert _param_count(model) == main_params
  assert _param_count(vae) == vae_params
  assert len(model_rules(config)) == main_tensors
  shapes = _expected_torch_shapes(model, model_rules(config))
  assert sum(math.prod(s) for s in shapes.values()) == main_params  # rules cover every element once


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_importer_keys_match_reference_fullsize_state_dict(name):
  """Our importer's expected tensor names and shapes equal the reference's state dict exactly."""
  ref = import_reference()
  torch = ref.torch
  raw = preset_config_dict(name)
  v2 = raw["architecture"] == "voxcpm2"
  module = ref.v2 if v2 else ref.v1
  raw.update(device="cpu", dtype="float32")
  ref_config = module.VoxCPMConfig.model_validate(raw)
  vae_cls, vae_cfg_cls = ((ref.audiovae.AudioVAEV2, ref.audiovae.AudioVAEConfigV2) if v2
                          else (ref.audiovae.AudioVAE, ref.audiovae.AudioVAEConfig))
  with torch.device("meta"):
    vae_cfg = vae_cfg_cls(**raw["audio_vae_config"]) if "audio_vae_config" in raw else vae_cfg_cls()
    model_cls = module.VoxCPM2Model if v2 else module.VoxCPMModel
    ref_model = _construct_on_meta(model_cls, ref_config, vae_cls(config=vae_cfg))
  state = {k: tuple(v.shape) for k, v in ref_model.state_dict().items()}
  ref_main = {k: s for k, s in state.items() if not k.startswith("audio_vae.")}
  ref_vae = {k[len("audio_vae."):]: s for k, s in state.items() if k.startswith("audio_vae.")}

  config, model, vae = _abstract(name)
  assert _expected_torch_shapes(model, model_rules(config)) == ref_main
  ours_vae = _expected_torch_shapes(vae, audio_vae_rules(config.audio_vae))
  buffers = set(audio_vae_buffer_keys(config.audio_vae))
  assert ours_vae == {k: s for k, s in ref_vae.items() if k not in buffers}
  assert buffers <= set(ref_vae)


def _construct_on_meta(model_cls, config, vae):
  """Instantiates the reference model on the meta device, KV caches included (they are not in
  the state dict)."""
  import torch

  original = torch.zeros

  def meta_zeros(*args, **kwargs):
    kwargs["device"] = "meta"
    return original(*args, **kwargs)

  torch.zeros = meta_zeros
  try:
    return model_cls(config, _NoTokenizer(), vae, device="cpu")
  finally:
    torch.zeros = original


class _NoTokenizer:
  vocab = {}


def test_preset_configs_are_consistent():
  c1, c2 = preset_config("voxcpm-0.5b"), preset_config("voxcpm2")
  assert (c1.version, c1.patch_size, c1.lm.resolved_head_dim, c1.audio_vae.hop_length) == (1, 2, 64, 640)
  assert (c2.version, c2.patch_size, c2.lm.resolved_head_dim, c2.audio_vae.decode_hop_length) == (2, 4, 128, 1920)
  assert c2.residual_lm.rope is None and c1.residual_lm.rope is not None
  assert c2.encoder.resolved_head_dim == 128 and c2.encoder.num_kv_heads == 2
  assert np.isclose(c1.lm.rope.scaling_factor, 1.0) and not c1.lm.rope.uses_long_factors
