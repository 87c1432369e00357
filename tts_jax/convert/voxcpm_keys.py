"""The exact correspondence between official VoxCPM tensor names and our parameters.

`model_rules(config)` and `audio_vae_rules(config)` list one `Rule` per official tensor: its
name, the path of our parameter, the layer index when our parameter is stacked over layers,
and how the PyTorch layout becomes ours. The importer checks a checkpoint against these lists
in both directions (nothing missing, nothing extra, every shape right) before loading anything.
"""

from __future__ import annotations

from typing import Iterator

from tts_jax.codecs.audio_vae import AudioVAEConfig
from tts_jax.convert.rules import Path, Rule
from tts_jax.models.voxcpm.config import VoxCPMConfig
from tts_jax.nn.transformer import TransformerConfig


def _linear(torch_prefix: str, path: Path, bias: bool = True) -> Iterator[Rule]:
  yield Rule(f"{torch_prefix}.weight", path + ("kernel",), "linear")
  if bias:
    yield Rule(f"{torch_prefix}.bias", path + ("bias",))


def transformer_rules(torch_prefix: str, path: Path, config: TransformerConfig) -> Iterator[Rule]:
  if config.vocab_size > 0:
    yield Rule(f"{torch_prefix}.embed_tokens.weight", path + ("embed_tokens", "embedding"))
  layer_path = path + ("layers",)
  for i in range(config.num_layers):
    t = f"{torch_prefix}.layers.{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
      yield Rule(f"{t}.self_attn.{proj}.weight", layer_path + ("self_attn", proj, "kernel"), "linear", i)
    for proj in ("gate_proj", "up_proj", "down_proj"):
      yield Rule(f"{t}.mlp.{proj}.weight", layer_path + ("mlp", proj, "kernel"), "linear", i)
    for norm in ("input_layernorm", "post_attention_layernorm"):
      yield Rule(f"{t}.{norm}.weight", layer_path + (norm, "weight"), "same", i)
  yield Rule(f"{torch_prefix}.norm.weight", path + ("norm", "weight"))


def model_rules(config: VoxCPMConfig) -> list[Rule]:
  """Rules of the main checkpoint (model.safetensors / pytorch_model.bin)."""
  rules = []
  rules += transformer_rules("base_lm", ("tslm",), config.lm)
  rules += transformer_rules("residual_lm", ("ralm",), config.residual_lm)
  rules.append(Rule("feat_encoder.special_token", ("local_encoder", "special_token"), "cls_token"))
  rules += _linear("feat_encoder.in_proj", ("local_encoder", "in_proj"))
  rules += transformer_rules("feat_encoder.encoder", ("local_encoder", "encoder"), config.encoder)
  dit = "feat_decoder.estimator"
  for name in ("in_proj", "cond_proj", "out_proj"):
    rules += _linear(f"{dit}.{name}", ("local_dit", name))
  for mlp in ("time_mlp", "delta_time_mlp"):
    for lin in ("linear_1", "linear_2"):
      rules += _linear(f"{dit}.{mlp}.{lin}", ("local_dit", mlp, lin))
  rules += transformer_rules(f"{dit}.decoder", ("local_dit", "decoder"), config.dit)
  rules += _linear("fsq_layer.in_proj", ("fsq", "in_proj"))
  rules += _linear("fsq_layer.out_proj", ("fsq", "out_proj"))
  rules += _linear("enc_to_lm_proj", ("enc_to_lm",))
  rules += _linear("lm_to_dit_proj", ("lm_to_dit",))
  rules += _linear("res_to_dit_proj", ("res_to_dit",))
  if config.fuse_residual_by_concat:
    rules += _linear("fusion_concat_proj", ("residual_fusion",))
  rules += _linear("stop_proj", ("stop", "proj"))
  rules += _linear("stop_head", ("stop", "head"), bias=False)
  return rules


# ------------------------------------------------------------------------------------------------
# AudioVAE (tensor names as stored in audiovae.*, i.e. without the `audio_vae.` prefix)


def _conv(torch_prefix: str, path: Path, bias: bool = True, transpose: bool = False) -> Iterator[Rule]:
  kind = "conv_transpose" if transpose else "conv"
  yield Rule(f"{torch_prefix}.weight_g", path + ("weight_g",), f"{kind}_g")
  yield Rule(f"{torch_prefix}.weight_v", path + ("weight_v",), f"{kind}_v")
  if bias:
    yield Rule(f"{torch_prefix}.bias", path + ("bias",))


def _snake(torch_prefix: str, path: Path) -> Iterator[Rule]:
  yield Rule(f"{torch_prefix}.alpha", path + ("alpha",), "snake_alpha")


def _residual_unit(torch_prefix: str, path: Path) -> Iterator[Rule]:
  yield from _snake(f"{torch_prefix}.block.0", path + ("snake1",))
  yield from _conv(f"{torch_prefix}.block.1", path + ("conv1",))
  yield from _snake(f"{torch_prefix}.block.2", path + ("snake2",))
  yield from _conv(f"{torch_prefix}.block.3", path + ("conv2",))


# Non-parameter tensors stored in the VAE checkpoint; the importer checks them against the config.
SR_BOUNDARIES_KEY = "decoder.sr_bin_boundaries"


def audio_vae_rules(config: AudioVAEConfig) -> list[Rule]:
  rules = list(_conv("encoder.block.0", ("encoder", "conv_in")))
  for i in range(len(config.encoder_rates)):
    t, p = f"encoder.block.{i + 1}", ("encoder", "blocks", i)
    for j in range(3):
      rules += _residual_unit(f"{t}.block.{j}", p + ("res_units", j))
    rules += _snake(f"{t}.block.3", p + ("snake",))
    rules += _conv(f"{t}.block.4", p + ("down",))
  rules += _conv("encoder.fc_mu", ("encoder", "fc_mu"))
  rules += _conv("encoder.fc_logvar", ("encoder", "fc_logvar"))

  if config.depthwise:
    rules += _conv("decoder.model.0", ("decoder", "conv_in"))
    rules += _conv("decoder.model.1", ("decoder", "conv_proj"))
    first_block = 2
  else:
    rules += _conv("decoder.model.0", ("decoder", "conv_in"))
    first_block = 1
  for i in range(len(config.decoder_rates)):
    index = first_block + i
    t, p = f"decoder.model.{index}", ("decoder", "blocks", i)
    rules += _snake(f"{t}.block.0", p + ("snake",))
    rules += _conv(f"{t}.block.1", p + ("up",), transpose=True)
    unit_start = 2
    if config.use_noise_block:
      rules += _conv(f"{t}.block.2.linear", p + ("noise", "linear"), bias=False)
      unit_start = 3
    for j in range(3):
      rules += _residual_unit(f"{t}.block.{unit_start + j}", p + ("res_units", j))
    if config.sr_bin_boundaries is not None:
      c = f"decoder.sr_cond_model.{index}"
      if config.cond_type != "add":
        rules.append(Rule(f"{c}.scale_embed.weight", ("decoder", "sr_cond", i, "scale_embed")))
        rules.append(Rule(f"{c}.bias_embed.weight", ("decoder", "sr_cond", i, "bias_embed")))
      else:
        rules.append(Rule(f"{c}.cond_embed.weight", ("decoder", "sr_cond", i, "bias_embed")))
  last = first_block + len(config.decoder_rates)
  rules += _snake(f"decoder.model.{last}", ("decoder", "snake_out"))
  rules += _conv(f"decoder.model.{last + 1}", ("decoder", "conv_out"))
  return rules


def audio_vae_buffer_keys(config: AudioVAEConfig) -> tuple[str, ...]:
  return (SR_BOUNDARIES_KEY,) if config.sr_bin_boundaries is not None else ()
