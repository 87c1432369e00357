"""Tiny random VoxCPM models built with the reference implementation (PyPI `voxcpm`), on CPU.

Used by the parity tests: each topology is written as an official-style model folder, imported
with our importer, and both implementations are run on the same inputs and injected noise.
The reference's audio I/O dependencies (torchaudio) are not needed for this and are stubbed.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import types
import zlib

import numpy as np

_LONGROPE_RANGE = (1.0, 49.9)  # the released factors span 1.0 .. 49.85


def import_reference():
  """Imports voxcpm's model classes (torchaudio stubbed: only its file loading uses it)."""
  import torch

  import transformers  # noqa: F401  (must be imported before the stub: it probes torchaudio's spec)

  torch.set_num_threads(2)
  sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
  from voxcpm.model import voxcpm as v1
  from voxcpm.model import voxcpm2 as v2
  from voxcpm.modules import audiovae

  return types.SimpleNamespace(torch=torch, v1=v1, v2=v2, audiovae=audiovae)


def _factors(rng: np.random.Generator, n: int) -> list[float]:
  return [float(v) for v in np.sort(rng.uniform(*_LONGROPE_RANGE, size=n))]


def _lm_config(rng, *, hidden, ffn, heads, kv_heads, layers, head_dim, max_pos, orig_max, vocab, use_mup=False,
               kv_channels=None, no_rope=False):
  cfg = dict(bos_token_id=1, eos_token_id=2, hidden_size=hidden, intermediate_size=ffn, max_position_embeddings=max_pos,
             num_attention_heads=heads, num_hidden_layers=layers, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
             rope_theta=10000.0,
             rope_scaling=dict(type="longrope", short_factor=_factors(rng, head_dim // 2),
                               long_factor=_factors(rng, head_dim // 2), original_max_position_embeddings=orig_max),
             vocab_size=vocab, use_mup=use_mup, scale_emb=12.0, dim_model_base=256, scale_depth=1.4)
  if kv_channels is not None:
    cfg["kv_channels"] = kv_channels
  if no_rope:
    cfg["no_rope"] = True
  return cfg


_CFM = dict(sigma_min=1e-6, solver="euler", t_scheduler="log-norm", training_cfg_rate=0.1, inference_cfg_rate=1.0)


def topology(name: str) -> dict:
  """Official-style config.json dicts. Each pair of topologies differs in layers, heads, KV heads,
  head size, patch size, FSQ width/scale and VAE strides; LongRoPE factors are random in
  [1, 49.9], `*_a` use the short factors (max == original) and `*_b` the long factors with a
  scaling factor != 1."""
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  if name == "v1_a":
    return dict(
        architecture="voxcpm",
        lm_config=_lm_config(rng, hidden=64, ffn=128, heads=4, kv_heads=2, layers=2, head_dim=16, max_pos=512,
                             orig_max=512, vocab=512),
        patch_size=2, feat_dim=8, residual_lm_num_layers=1, scalar_quantization_latent_dim=16,
        scalar_quantization_scale=9,
        encoder_config=dict(hidden_dim=32, ffn_dim=64, num_heads=2, num_layers=1),
        dit_config=dict(hidden_dim=32, ffn_dim=64, num_heads=2, num_layers=2, cfm_config=_CFM),
        audio_vae_config=dict(encoder_dim=4, encoder_rates=[2, 3], latent_dim=8, decoder_dim=16,
                              decoder_rates=[3, 2], depthwise=True, sample_rate=16000),
        max_length=256, device="cpu", dtype="float32")
  if name == "v1_b":
    return dict(
        architecture="voxcpm",
        lm_config=_lm_config(rng, hidden=48, ffn=80, heads=3, kv_heads=1, layers=3, head_dim=16, max_pos=2048,
                             orig_max=256, vocab=512, use_mup=True),
        patch_size=3, feat_dim=6, residual_lm_num_layers=2, scalar_quantization_latent_dim=8,
        scalar_quantization_scale=5,
        encoder_config=dict(hidden_dim=48, ffn_dim=96, num_heads=3, num_layers=2),
        dit_config=dict(hidden_dim=32, ffn_dim=48, num_heads=2, num_layers=1, cfm_config=_CFM),
        audio_vae_config=dict(encoder_dim=6, encoder_rates=[5, 2], latent_dim=6, decoder_dim=24,
                              decoder_rates=[2, 5], depthwise=False, sample_rate=16000),
        max_length=256, device="cpu", dtype="float32")
  if name == "v2_a":
    return dict(
        architecture="voxcpm2",
        lm_config=_lm_config(rng, hidden=64, ffn=128, heads=4, kv_heads=2, layers=2, head_dim=24, max_pos=512,
                             orig_max=512, vocab=512, kv_channels=24),
        patch_size=4, feat_dim=8, residual_lm_num_layers=2, residual_lm_no_rope=True,
        scalar_quantization_latent_dim=16, scalar_quantization_scale=9,
        encoder_config=dict(hidden_dim=32, ffn_dim=64, num_heads=2, num_layers=1, kv_channels=24),
        dit_config=dict(hidden_dim=32, ffn_dim=64, num_heads=4, num_layers=2, kv_channels=24, cfm_config=_CFM),
        audio_vae_config=dict(encoder_dim=4, encoder_rates=[2, 3], latent_dim=8, decoder_dim=16,
                              decoder_rates=[3, 2, 2], depthwise=True, sample_rate=16000, out_sample_rate=32000,
                              sr_bin_boundaries=[20000, 30000, 40000]),
        max_length=256, device="cpu", dtype="float32")
  if name == "v2_b":
    return dict(
        architecture="voxcpm2",
        lm_config=_lm_config(rng, hidden=32, ffn=96, heads=2, kv_heads=1, layers=1, head_dim=16, max_pos=1024,
                             orig_max=128, vocab=512),
        patch_size=2, feat_dim=6, residual_lm_num_layers=1, residual_lm_no_rope=False,
        scalar_quantization_latent_dim=12, scalar_quantization_scale=7,
        encoder_config=dict(hidden_dim=32, ffn_dim=48, num_heads=2, num_layers=2),
        dit_config=dict(hidden_dim=48, ffn_dim=64, num_heads=3, num_layers=1, cfm_config=_CFM),
        audio_vae_config=dict(encoder_dim=6, encoder_rates=[3, 2], latent_dim=6, decoder_dim=32,
                              decoder_rates=[3, 2, 2, 2], depthwise=False, sample_rate=16000, out_sample_rate=48000,
                              sr_bin_boundaries=[20000, 30000, 40000]),
        max_length=256, device="cpu", dtype="float32")
  raise KeyError(name)


TOPOLOGIES = ("v1_a", "v1_b", "v2_a", "v2_b")


def randomize_(module, seed: int) -> None:
  """Perturbs every parameter so that no init constant (ones, zeros, g == |v|) hides a bug."""
  ref = import_reference()
  torch = ref.torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith(".alpha"):
        p.copy_(0.5 + torch.rand(p.shape, generator=gen))  # Snake needs alpha away from 0
      elif name.endswith("weight_g"):
        p.mul_(0.7 + 0.6 * torch.rand(p.shape, generator=gen))
      else:
        p.add_(0.05 * torch.randn(p.shape, generator=gen))


def build_reference(name: str, seed: int = 0, lora: dict | None = None):
  """(reference model in eval mode, config dict) of a tiny random topology; `lora` (LoRAConfig
  fields) wraps the reference's LoRA layers around the targeted linears."""
  ref = import_reference()
  torch = ref.torch
  cfg = topology(name)
  module = ref.v2 if cfg["architecture"] == "voxcpm2" else ref.v1
  config = module.VoxCPMConfig.model_validate(copy.deepcopy(cfg))
  vae_cls = ref.audiovae.AudioVAEV2 if cfg["architecture"] == "voxcpm2" else ref.audiovae.AudioVAE
  vae_cfg_cls = ref.audiovae.AudioVAEConfigV2 if cfg["architecture"] == "voxcpm2" else ref.audiovae.AudioVAEConfig
  torch.manual_seed(seed)
  vae = vae_cls(config=vae_cfg_cls(**cfg["audio_vae_config"]))
  model_cls = module.VoxCPM2Model if cfg["architecture"] == "voxcpm2" else module.VoxCPMModel
  lora_config = module.LoRAConfig(**lora) if lora else None
  model = model_cls(config, _StubTokenizer(), vae, lora_config=lora_config, device="cpu")
  randomize_(model, seed + 1)
  return model.float().eval(), cfg


class _StubTokenizer:
  """The reference model wraps a tokenizer at construction; these tests feed token ids directly."""

  vocab = {"<unk>": 0}

  def tokenize(self, text):
    raise NotImplementedError("token ids are passed directly in parity tests")


def write_model_dir(model, cfg: dict, folder: str, *, torch_format: bool = False, wrap_state_dict: bool = False) -> str:
  """Writes an official-style model folder (config.json, weights, AudioVAE, tokenizer files)."""
  ref = import_reference()
  torch = ref.torch
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
  state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
  main = {k: v for k, v in state.items() if not k.startswith("audio_vae.")}
  vae = {k[len("audio_vae."):]: v for k, v in state.items() if k.startswith("audio_vae.")}
  if torch_format:
    torch.save({"state_dict": main} if wrap_state_dict else main, os.path.join(folder, "pytorch_model.bin"))
    torch.save({"state_dict": vae} if wrap_state_dict else vae, os.path.join(folder, "audiovae.pth"))
  else:
    from safetensors.torch import save_file

    save_file(main, os.path.join(folder, "model.safetensors"))
    save_file(vae, os.path.join(folder, "audiovae.safetensors"))
  write_tokenizer_files(folder)
  return folder


# ------------------------------------------------------------------------------------------------
# A Llama-style tokenizer.json (SentencePiece BPE with byte fallback, legacy "▁" normaliser), like
# MiniCPM-4's, trained on a few English and Chinese sentences so that it has multi-character CJK
# tokens for the CJK-splitting rule to act on.

_TRAINING_TEXT = [
    "hello world this is a test of the voice", "the quick brown fox jumps over the lazy dog",
    "你好世界", "今天天气很好", "我们是好朋友", "hello 你好 world 世界", "语音合成模型",
]


def write_tokenizer_files(folder: str) -> None:
  from tokenizers import Tokenizer, decoders, models, normalizers, trainers

  trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
  trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
  trainer_tok.train_from_iterator(_TRAINING_TEXT * 20, trainer)
  learned = json.loads(trainer_tok.to_str())["model"]
  vocab = dict(learned["vocab"])
  for b in range(256):  # byte-fallback pieces, as in Llama vocabularies
    vocab.setdefault(f"<0x{b:02X}>", len(vocab))
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
  tok.save(os.path.join(folder, "tokenizer.json"))
  special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump(dict(tokenizer_class="LlamaTokenizer", add_bos_token=True, add_eos_token=False, legacy=True, **special), f)
  with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
    json.dump(special, f)
