"""Import an official VoxCPM model folder (VoxCPM-0.5B, VoxCPM1.5, VoxCPM2).

A folder holds `config.json`, `model.safetensors` (or `pytorch_model.bin`), `audiovae.safetensors`
(or `audiovae.pth`, legacy `weight_g`/`weight_v` weight norm) and the tokenizer files. Every
tensor must map onto a parameter and every parameter must be filled; otherwise the error names
the offending tensors and nothing is returned. LoRA adapters, found in the main file, in a
`lora_weights.*` file of the folder, or given with `lora_path`, are merged into the base weights.

    pretrained = load_voxcpm("/models/VoxCPM2")
    pretrained.model, pretrained.audio_vae, pretrained.tokenizer, pretrained.config
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts_jax.codecs.audio_vae import AudioVAE
from tts_jax.convert.lora import merge_lora, read_lora_alpha, read_lora_file, split_lora
from tts_jax.convert.state_loader import check_and_convert, materialize
from tts_jax.convert.tensor_files import CheckpointError, find_tensor_file, read_tensor_file
from tts_jax.convert.voxcpm_config import read_voxcpm_config
from tts_jax.convert.voxcpm_keys import SR_BOUNDARIES_KEY, audio_vae_buffer_keys, audio_vae_rules, model_rules
from tts_jax.data.voxcpm_tokenizer import VoxCPMTokenizer
from tts_jax.models.voxcpm.config import VoxCPMConfig
from tts_jax.models.voxcpm.model import VoxCPM

_VAE_PREFIX = "audio_vae."


@dataclasses.dataclass
class PretrainedVoxCPM:
  config: VoxCPMConfig
  model: VoxCPM
  audio_vae: AudioVAE
  tokenizer: VoxCPMTokenizer | None
  model_dir: str


def _normalize_weight_norm_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Accepts PyTorch's newer parametrisation names for weight norm as the legacy ones."""
  out = {}
  for key, value in tensors.items():
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    key = key.replace(".parametrizations.weight.original1", ".weight_v")
    out[key] = value
  return out


def _check_vae_buffers(vae_tensors: dict[str, np.ndarray], config: VoxCPMConfig, source: str) -> dict:
  """Consumes non-parameter tensors of the VAE file after checking them against config.json."""
  tensors = dict(vae_tensors)
  for key in audio_vae_buffer_keys(config.audio_vae):
    if key not in tensors:
      continue  # the buffer is derived from the config; older exports may omit it
    if key == SR_BOUNDARIES_KEY:
      stored = tuple(int(v) for v in np.asarray(tensors.pop(key)).reshape(-1))
      if stored != config.audio_vae.sr_bin_boundaries:
        raise CheckpointError(f"{source}: {key} = {list(stored)} disagrees with config.json "
                              f"sr_bin_boundaries = {list(config.audio_vae.sr_bin_boundaries)}")
  return tensors


def _separate_vae_from_main(main: dict[str, np.ndarray], vae: dict[str, np.ndarray], main_source: str):
  """A full state dict may also contain `audio_vae.*`; those must equal the AudioVAE file."""
  out = {}
  for key, value in main.items():
    if not key.startswith(_VAE_PREFIX):
      out[key] = value
      continue
    name = key[len(_VAE_PREFIX):]
    if name not in vae or vae[name].shape != value.shape or not np.array_equal(
        np.asarray(vae[name], np.float32), np.asarray(value, np.float32)):
      raise CheckpointError(f"{main_source} contains {key}, which differs from (or is absent in) the "
                            "AudioVAE file; remove the audio_vae.* tensors or make them agree")
  return out


def _lora_tensors(model_dir: str, in_file: dict, lora_path: str | None, lora_alpha: float | None):
  """All LoRA tensors to merge and their alpha."""
  lora, alpha_dirs = dict(in_file), [model_dir]
  default_file = os.path.join(model_dir, "lora_weights.safetensors")
  if lora_path is None and os.path.isfile(default_file):
    lora_path = default_file
  if lora_path is not None:
    for key, value in read_lora_file(lora_path).items():
      if key in lora:
        raise CheckpointError(f"{key} is given both in the model file and in {lora_path}")
      lora[key] = value
    alpha_dirs.insert(0, lora_path if os.path.isdir(lora_path) else os.path.dirname(lora_path))
  if lora_alpha is None and lora:
    for folder in alpha_dirs:
      lora_alpha = read_lora_alpha(folder)
      if lora_alpha is not None:
        break
  return lora, lora_alpha


def load_voxcpm(model_dir: str, *, lora_path: str | None = None, lora_alpha: float | None = None,
                param_dtype=jnp.float32, load_tokenizer: bool = True) -> PretrainedVoxCPM:
  """Loads an official VoxCPM folder. The AudioVAE is always float32 (as in the reference)."""
  if not os.path.isdir(model_dir):
    raise CheckpointError(f"model folder {model_dir} does not exist")
  config, _ = read_voxcpm_config(model_dir)
  main_path = find_tensor_file(model_dir, ("model.safetensors", "pytorch_model.bin"), "model weights")
  vae_path = find_tensor_file(model_dir, ("audiovae.safetensors", "audiovae.pth"), "AudioVAE weights")
  vae_tensors = _check_vae_buffers(_normalize_weight_norm_names(read_tensor_file(vae_path)), config, vae_path)
  main_tensors = _separate_vae_from_main(read_tensor_file(main_path), vae_tensors, main_path)
  main_tensors, in_file_lora = split_lora(main_tensors)
  lora, alpha = _lora_tensors(model_dir, in_file_lora, lora_path, lora_alpha)
  main_tensors = merge_lora(main_tensors, lora, alpha, source=lora_path or main_path)
  tokenizer = VoxCPMTokenizer.from_dir(model_dir) if load_tokenizer else None
  if tokenizer is not None and tokenizer.vocab_size > config.lm.vocab_size:
    raise CheckpointError(f"tokenizer.json has {tokenizer.vocab_size} tokens but the model embeds only "
                          f"{config.lm.vocab_size}")

  abstract_model = nnx.eval_shape(lambda: VoxCPM(config, rngs=nnx.Rngs(0)))
  abstract_vae = nnx.eval_shape(lambda: AudioVAE(config.audio_vae, rngs=nnx.Rngs(0)))
  model_arrays = check_and_convert(abstract_model, model_rules(config), main_tensors, source=main_path)
  vae_arrays = check_and_convert(abstract_vae, audio_vae_rules(config.audio_vae), vae_tensors, source=vae_path)
  return PretrainedVoxCPM(
      config=config,
      model=materialize(abstract_model, model_arrays, param_dtype),
      audio_vae=materialize(abstract_vae, vae_arrays, jnp.float32),
      tokenizer=tokenizer,
      model_dir=model_dir,
  )


def _count(module) -> int:
  return sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(module, nnx.Param)))


def describe_voxcpm(pretrained: PretrainedVoxCPM) -> str:
  """A human-readable summary of an imported model."""
  c = pretrained.config
  vae = c.audio_vae
  lines = [
      f"VoxCPM{'2' if c.version == 2 else ' (v1)'} from {pretrained.model_dir}",
      f"  parameters: model {_count(pretrained.model):,}, AudioVAE {_count(pretrained.audio_vae):,}",
      f"  TSLM {c.lm.num_layers}L x {c.lm.hidden_size}, heads {c.lm.num_heads}/{c.lm.num_kv_heads} kv, "
      f"head {c.lm.resolved_head_dim}, vocab {c.lm.vocab_size}",
      f"  RALM {c.residual_lm.num_layers}L ({'RoPE' if c.residual_lm.rope else 'no RoPE'}), "
      f"LocEnc {c.encoder.num_layers}L x {c.encoder.hidden_size}, LocDiT {c.dit.num_layers}L x {c.dit.hidden_size}",
      f"  patch {c.patch_size} frames, FSQ {c.fsq_latent_dim} x {2 * c.fsq_scale + 1} levels",
      f"  AudioVAE {vae.sample_rate} Hz in -> {vae.output_sample_rate} Hz out, {vae.latent_dim}-d latents at "
      f"{vae.sample_rate / vae.hop_length:g} Hz",
  ]
  if pretrained.tokenizer is not None:
    lines.append(f"  tokenizer: {pretrained.tokenizer.vocab_size} tokens")
  return "\n".join(lines)
