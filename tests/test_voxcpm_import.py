"""The VoxCPM importer: file formats, LoRA merging, and clear errors for every kind of bad folder."""

from __future__ import annotations

import builtins
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from parity import assert_close
from tts_jax.convert.tensor_files import CheckpointError, read_safetensors
from tts_jax.convert.voxcpm import load_voxcpm
from voxcpm_reference import build_reference, import_reference, write_model_dir

torch = import_reference().torch


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
  ref, cfg = build_reference("v1_a", seed=5)
  return ref, cfg, write_model_dir(ref, cfg, str(tmp_path_factory.mktemp("v1_a")))


@pytest.fixture
def folder(reference_dir, tmp_path):
  """A fresh, mutable copy of a valid model folder."""
  return shutil.copytree(reference_dir[2], tmp_path / "model")


def _params(module):
  return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def _rewrite(path, mutate):
  tensors = {k: np.array(v) for k, v in read_safetensors(str(path)).items()}
  mutate(tensors)
  save_file(tensors, str(path))


# --- errors ---------------------------------------------------------------------------------------

def test_missing_tensor_is_named(folder):
  _rewrite(folder / "model.safetensors", lambda t: t.pop("base_lm.layers.1.mlp.up_proj.weight"))
  with pytest.raises(CheckpointError, match=r"missing tensors \(1\):\n\s+base_lm.layers.1.mlp.up_proj.weight"):
    load_voxcpm(str(folder))


def test_renamed_tensor_is_missing_and_unexpected(folder):
  _rewrite(folder / "model.safetensors", lambda t: t.__setitem__("stop_proj.wieght", t.pop("stop_proj.weight")))
  with pytest.raises(CheckpointError) as err:
    load_voxcpm(str(folder))
  assert "missing tensors (1):\n    stop_proj.weight" in str(err.value)
  assert "unexpected tensors (1):\n    stop_proj.wieght" in str(err.value)


def test_wrong_shape_is_named(folder):
  def mutate(t):
    t["fsq_layer.in_proj.weight"] = np.zeros((17, 64), np.float32)
  _rewrite(folder / "model.safetensors", mutate)
  with pytest.raises(CheckpointError, match=r"fsq_layer.in_proj.weight: checkpoint has \[17, 64\], the model needs \[16, 64\]"):
    load_voxcpm(str(folder))


def test_wrong_shape_in_vae_is_named(folder):
  def mutate(t):
    t["decoder.model.0.weight_v"] = np.zeros((8, 1, 5), np.float32)
  _rewrite(folder / "audiovae.safetensors", mutate)
  with pytest.raises(CheckpointError, match=r"audiovae.safetensors.*\n.*\n\s+decoder.model.0.weight_v: checkpoint has \[8, 1, 5\]"):
    load_voxcpm(str(folder))


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "empty"])
def test_corrupt_safetensors(folder, damage):
  path = folder / "model.safetensors"
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[: len(data) // 2])
  elif damage == "garbage_header":
    path.write_bytes(data[:8] + b"\xff" * 32 + data[40:])
  else:
    path.write_bytes(b"")
  with pytest.raises(CheckpointError, match=r"model.safetensors (is corrupt|is not a safetensors)"):
    load_voxcpm(str(folder))


def test_missing_config(folder):
  os.remove(folder / "config.json")
  with pytest.raises(CheckpointError, match=r"has no config.json"):
    load_voxcpm(str(folder))


def test_invalid_config_values(folder):
  cfg = json.loads((folder / "config.json").read_text())
  del cfg["lm_config"]["num_key_value_heads"]
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match=r"lm_config lacks num_key_value_heads"):
    load_voxcpm(str(folder))
  cfg["lm_config"]["num_key_value_heads"] = 3  # 4 heads are not a multiple of 3
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match=r"num_heads=4 is not a multiple of num_key_value_heads=3"):
    load_voxcpm(str(folder))
  (folder / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match=r"config.json is not valid JSON"):
    load_voxcpm(str(folder))


def test_missing_weight_files(folder):
  os.remove(folder / "audiovae.safetensors")
  with pytest.raises(CheckpointError, match=r"no AudioVAE weights: expected one of audiovae.safetensors, audiovae.pth"):
    load_voxcpm(str(folder))
  os.remove(folder / "model.safetensors")
  with pytest.raises(CheckpointError, match=r"no model weights"):
    load_voxcpm(str(folder))


def test_unknown_architecture(folder):
  cfg = json.loads((folder / "config.json").read_text())
  cfg["architecture"] = "voxcpm9"
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match=r"unsupported VoxCPM architecture 'voxcpm9'"):
    load_voxcpm(str(folder))


def test_pickle_without_torch_gives_clear_message(reference_dir, tmp_path, monkeypatch):
  ref, cfg, _ = reference_dir
  folder = write_model_dir(ref, cfg, str(tmp_path / "pt"), torch_format=True)
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_torch)
  with pytest.raises(CheckpointError, match=r"PyTorch pickle; reading it needs PyTorch"):
    load_voxcpm(folder)


# --- formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [False, True])
def test_torch_pickle_folders_load_identically(reference_dir, tmp_path, wrap):
  ref, cfg, st_dir = reference_dir
  folder = write_model_dir(ref, cfg, str(tmp_path / "pt"), torch_format=True, wrap_state_dict=wrap)
  assert os.path.exists(os.path.join(folder, "pytorch_model.bin")) and os.path.exists(os.path.join(folder, "audiovae.pth"))
  a, b = load_voxcpm(st_dir), load_voxcpm(folder)
  for mod in ("model", "audio_vae"):
    pa, pb = _params(getattr(a, mod)), _params(getattr(b, mod))
    assert pa.keys() == pb.keys()
    for k in pa:
      np.testing.assert_array_equal(pa[k], pb[k])


def test_newer_weight_norm_names_and_bf16(folder, reference_dir):
  """parametrizations.weight.original0/1 names are accepted; bf16 tensors load (rounded)."""
  _rewrite(folder / "audiovae.safetensors", lambda t: [
      t.__setitem__(k.replace(".weight_g", ".parametrizations.weight.original0").replace(
          ".weight_v", ".parametrizations.weight.original1"), t.pop(k)) for k in list(t) if "weight_" in k])
  _rewrite(folder / "model.safetensors", lambda t: [t.__setitem__(k, t[k].astype(ml_dtypes.bfloat16)) for k in t])
  got = load_voxcpm(str(folder))
  want = load_voxcpm(reference_dir[2])
  for (k, a), (_, b) in zip(sorted(_params(got.model).items()), sorted(_params(want.model).items())):
    np.testing.assert_array_equal(a, b.astype(ml_dtypes.bfloat16).astype(np.float32), err_msg=str(k))
  for (k, a), (_, b) in zip(sorted(_params(got.audio_vae).items()), sorted(_params(want.audio_vae).items())):
    np.testing.assert_array_equal(a, b, err_msg=str(k))


def test_full_state_dict_with_matching_vae_copy_is_accepted(folder, reference_dir):
  vae = {k: np.array(v) for k, v in read_safetensors(str(folder / "audiovae.safetensors")).items()}
  _rewrite(folder / "model.safetensors", lambda t: t.update({f"audio_vae.{k}": v for k, v in vae.items()}))
  load_voxcpm(str(folder))
  _rewrite(folder / "model.safetensors", lambda t: t.__setitem__("audio_vae.encoder.block.0.bias",
                                                                   t["audio_vae.encoder.block.0.bias"] + 1))
  with pytest.raises(CheckpointError, match=r"audio_vae.encoder.block.0.bias, which differs"):
    load_voxcpm(str(folder))


# --- LoRA -----------------------------------------------------------------------------------------

_LORA = dict(enable_lm=True, enable_dit=True, enable_proj=True, r=4, alpha=8)


@pytest.fixture(scope="module")
def lora_reference(tmp_path_factory):
  """A reference model with LoRA on LM, DiT and projections (random non-zero adapters)."""
  ref, cfg = build_reference("v2_a", seed=9, lora=_LORA)
  state = {k: v.detach().contiguous() for k, v in ref.state_dict().items()}
  assert any(k.endswith("lora_B") for k in state)
  return ref, cfg, state


def _lora_outputs(model):
  """Outputs touching every LoRA target: TSLM and RALM hidden states, LocDiT velocity, projections."""
  rng = np.random.default_rng(0)
  c = model.config
  x = rng.normal(size=(1, 6, c.lm.hidden_size)).astype(np.float32)
  feats = rng.normal(size=(1, 3, c.patch_size, c.feat_dim)).astype(np.float32)
  xd = rng.normal(size=(2, c.patch_size, c.feat_dim)).astype(np.float32)
  mu = rng.normal(size=(2, 2 * c.dit.hidden_size)).astype(np.float32)
  return x, feats, xd, mu


def test_lora_merge_matches_reference_lora_layers(lora_reference, tmp_path):
  ref, cfg, state = lora_reference
  folder = str(tmp_path / "base")
  write_model_dir(ref, cfg, folder)  # main file holds base weights + adapters
  base = {k: v.numpy() for k, v in state.items() if not k.startswith("audio_vae.") and "lora_" not in k}
  lora = {k: v.numpy() for k, v in state.items() if "lora_" in k}
  save_file(base, os.path.join(folder, "model.safetensors"))
  lora_dir = tmp_path / "adapter"
  lora_dir.mkdir()
  save_file(lora, str(lora_dir / "lora_weights.safetensors"))
  (lora_dir / "lora_config.json").write_text(json.dumps({"lora_config": _LORA}))

  ours = load_voxcpm(folder, lora_path=str(lora_dir)).model
  x, feats, xd, mu = _lora_outputs(ours)
  t = np.array([0.3, 0.8], np.float32)
  with torch.no_grad():
    ref_lm = ref.base_lm(torch.tensor(x), is_causal=True)[0].numpy()
    ref_res = ref.residual_lm(torch.tensor(x), is_causal=True)[0].numpy()
    ref_emb = ref.enc_to_lm_proj(ref.feat_encoder(torch.tensor(feats))).numpy()
    ref_v = ref.feat_decoder.estimator(torch.tensor(xd).transpose(1, 2), torch.tensor(mu), torch.tensor(t),
                                       torch.tensor(xd).transpose(1, 2), torch.zeros(2)).numpy()
    ref_fuse = ref.fusion_concat_proj(torch.tensor(np.concatenate([x, x], -1))).numpy()
  assert_close("LoRA merged TSLM hidden", ours.tslm(jnp.asarray(x), causal=True), ref_lm)
  assert_close("LoRA merged RALM hidden", ours.ralm(jnp.asarray(x), causal=True), ref_res)
  assert_close("LoRA merged LocEnc+enc_to_lm", ours.embed_patches(jnp.asarray(feats)), ref_emb)
  assert_close("LoRA merged LocDiT velocity", ours.local_dit(jnp.asarray(xd), jnp.asarray(mu), jnp.asarray(t),
                                                             jnp.asarray(xd), jnp.zeros(2)), ref_v.transpose(0, 2, 1))
  assert_close("LoRA merged fusion_concat_proj", ours.residual_fusion(jnp.asarray(np.concatenate([x, x], -1))), ref_fuse)

  # The adapters matter: without them the outputs are far from the reference's.
  plain = load_voxcpm(folder, lora_path=None, load_tokenizer=False).model
  assert float(jnp.max(jnp.abs(plain.tslm(jnp.asarray(x), causal=True) - ref_lm))) > 1e-2

  # The same adapters stored inside the main file (a full LoRA training state dict) merge the same way.
  in_file = str(tmp_path / "in_file")
  write_model_dir(ref, cfg, in_file)
  shutil.copy(lora_dir / "lora_config.json", in_file)
  merged = load_voxcpm(in_file).model
  np.testing.assert_allclose(merged.tslm(jnp.asarray(x), causal=True), ours.tslm(jnp.asarray(x), causal=True),
                             atol=1e-6)


def test_lora_errors(lora_reference, tmp_path):
  ref, cfg, state = lora_reference
  folder = str(tmp_path / "m")
  write_model_dir(ref, cfg, folder)
  with pytest.raises(CheckpointError, match=r"has LoRA weights but no alpha"):
    load_voxcpm(folder)
  bad = tmp_path / "bad_lora.safetensors"
  save_file({"base_lm.layers.0.self_attn.nonexistent.lora_A": np.zeros((4, 64), np.float32),
             "base_lm.layers.0.self_attn.nonexistent.lora_B": np.zeros((64, 4), np.float32)}, str(bad))
  with pytest.raises(CheckpointError, match=r"no base tensor base_lm.layers.0.self_attn.nonexistent.weight"):
    load_voxcpm(folder, lora_path=str(bad), lora_alpha=8.0)


def test_loaded_model_runs_under_jit(reference_dir):
  model = load_voxcpm(reference_dir[2]).model
  out = jax.jit(lambda m, x: m.tslm(x, causal=True))(model, jnp.ones((1, 3, 64)))
  assert out.shape == (1, 3, 64) and bool(jnp.all(jnp.isfinite(out)))
