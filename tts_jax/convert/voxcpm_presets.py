"""The released VoxCPM topologies as official-style `config.json` dicts.

These reconstruct the published configs (weights cannot be downloaded here): layer counts,
widths and heads are confirmed by the tensor counts of the released checkpoints (377 tensors /
652,287,296 parameters for VoxCPM-0.5B, 577 / 2,290,004,544 for VoxCPM2). The LongRoPE factors
are MiniCPM-4's published ones (0.5B: the 32 factors of MiniCPM4-0.5B; VoxCPM2: the 64 factors
of MiniCPM4-8B, which third-party VoxCPM2 configs repeat). When a real model folder is
available, its own config.json is what `load_voxcpm` uses; these presets serve shape checks,
random-weight benchmarks and training from scratch.
"""

from __future__ import annotations

import copy

from tts_jax.convert.voxcpm_config import voxcpm_config_from_official
from tts_jax.models.voxcpm.config import VoxCPMConfig

MINICPM4_0_5B_LONGROPE = (
    1.0004360675811768, 1.0668443441390991, 1.1631425619125366, 1.3025742769241333, 1.5040205717086792,
    1.7941505908966064, 2.2101221084594727, 2.802666664123535, 3.6389970779418945, 4.804192543029785,
    6.39855432510376, 8.527148246765137, 11.277542114257812, 14.684998512268066, 18.69317054748535,
    23.13019371032715, 27.72362518310547, 32.1606559753418, 36.168827056884766, 39.57627868652344,
    42.32667541503906, 44.45526885986328, 46.04962921142578, 47.21482849121094, 48.05115509033203,
    48.64370346069336, 49.05967712402344, 49.34980392456055, 49.551246643066406, 49.69068145751953,
    49.78697967529297, 49.85338592529297)

MINICPM4_8B_LONGROPE = (
    0.9977997200264581, 1.014658295992452, 1.0349680404997148, 1.059429246056193, 1.0888815016813513,
    1.1243301355211495, 1.166977103606075, 1.2182568066927284, 1.2798772354275727, 1.3538666751582975,
    1.4426259039919596, 1.5489853358570191, 1.6762658237220625, 1.8283407612492941, 2.0096956085876183,
    2.225478927469756, 2.481536379650452, 2.784415934557119, 3.1413289096347365, 3.560047844772632,
    4.048719380066383, 4.752651957515948, 5.590913044973868, 6.584005926629993, 7.7532214876576155,
    9.119754865903639, 10.704443927019176, 12.524994176518703, 14.59739595363613, 16.93214476166354,
    19.53823297353041, 22.417131025031697, 25.568260840911098, 28.991144156566317, 32.68408069090375,
    36.65174474170465, 40.90396065611201, 45.4664008671033, 50.37147343433591, 55.6804490772103,
    61.470816952306556, 67.8622707390618, 75.00516023410414, 83.11898235973767, 92.50044360202462,
    103.57086856690864, 116.9492274587385, 118.16074567836519, 119.18497548708795, 120.04810876261652,
    120.77352815196981, 121.38182790207875, 121.89094985353891, 122.31638758099915, 122.6714244963338,
    122.9673822552567, 123.21386397019609, 123.41898278254268, 123.58957065488238, 123.73136519024158,
    123.84917421274221, 123.94701903496814, 124.02825801299717, 124.09569231686116)

_CFM = dict(sigma_min=1e-6, solver="euler", t_scheduler="log-norm", training_cfg_rate=0.1, inference_cfg_rate=1.0)


def _lm(hidden, ffn, layers, factors, kv_channels=None):
  lm = dict(bos_token_id=1, eos_token_id=2, hidden_size=hidden, intermediate_size=ffn, max_position_embeddings=32768,
            num_attention_heads=16, num_hidden_layers=layers, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling=dict(type="longrope", long_factor=list(factors), short_factor=list(factors),
                              original_max_position_embeddings=32768),
            vocab_size=73448, use_mup=False, scale_emb=12, dim_model_base=256, scale_depth=1.4)
  if kv_channels is not None:
    lm["kv_channels"] = kv_channels
  return lm


_PRESETS = {
    "voxcpm-0.5b": dict(
        architecture="voxcpm", lm_config=_lm(1024, 4096, 24, MINICPM4_0_5B_LONGROPE), patch_size=2, feat_dim=64,
        residual_lm_num_layers=6, scalar_quantization_latent_dim=256, scalar_quantization_scale=9,
        encoder_config=dict(hidden_dim=1024, ffn_dim=4096, num_heads=16, num_layers=4),
        dit_config=dict(hidden_dim=1024, ffn_dim=4096, num_heads=16, num_layers=4, cfm_config=_CFM),
        max_length=4096, dtype="bfloat16"),
    "voxcpm2": dict(
        architecture="voxcpm2", lm_config=_lm(2048, 6144, 28, MINICPM4_8B_LONGROPE, kv_channels=128), patch_size=4,
        feat_dim=64, residual_lm_num_layers=8, residual_lm_no_rope=True, scalar_quantization_latent_dim=512,
        scalar_quantization_scale=9,
        encoder_config=dict(hidden_dim=1024, ffn_dim=4096, num_heads=16, num_layers=12, kv_channels=128),
        dit_config=dict(hidden_dim=1024, ffn_dim=4096, num_heads=16, num_layers=12, kv_channels=128,
                        dit_mean_mode=False, cfm_config=dict(_CFM, inference_cfg_rate=2.0)),
        audio_vae_config=dict(encoder_dim=128, encoder_rates=[2, 5, 8, 8], latent_dim=64, decoder_dim=2048,
                              decoder_rates=[8, 6, 5, 2, 2, 2], depthwise=True, sample_rate=16000,
                              out_sample_rate=48000, sr_bin_boundaries=[20000, 30000, 40000]),
        max_length=8192, dtype="bfloat16"),
}

PRESET_NAMES = tuple(_PRESETS)


def preset_config_dict(name: str) -> dict:
  """The official-style config.json dict of a released topology ('voxcpm-0.5b' or 'voxcpm2')."""
  if name not in _PRESETS:
    raise KeyError(f"unknown VoxCPM preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
  return copy.deepcopy(_PRESETS[name])


def preset_config(name: str) -> VoxCPMConfig:
  return voxcpm_config_from_official(preset_config_dict(name))
