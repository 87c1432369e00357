"""Numerical parity of our VoxCPM (both generations) with the reference implementation.

Four tiny random topologies (two per generation) are built with the PyPI `voxcpm` package,
written as official model folders, imported with `load_voxcpm`, and compared in float32 with
the same inputs and the same injected noise. Every comparison must agree to 1e-4.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parity import assert_close
from tts_jax.convert.voxcpm import load_voxcpm
from tts_jax.models.flow.cfm import FlowNoise
from tts_jax.models.voxcpm.inference import generate_fixed, prefill
from tts_jax.models.voxcpm.loss import VoxCPMBatch, teacher_forcing, voxcpm_loss
from voxcpm_reference import TOPOLOGIES, build_reference, import_reference, write_model_dir

torch = import_reference().torch
_CACHE = {}


@pytest.fixture(params=TOPOLOGIES, scope="module")
def pair(request, tmp_path_factory):
  """(reference model, ours: PretrainedVoxCPM, name) for one topology, built once per module."""
  name = request.param
  if name not in _CACHE:
    ref, cfg = build_reference(name)
    folder = write_model_dir(ref, cfg, str(tmp_path_factory.mktemp(name)))
    _CACHE[name] = (ref, load_voxcpm(folder))
  ref, ours = _CACHE[name]
  return ref, ours, name


def _t(x, dtype=torch.float32):
  return torch.tensor(np.asarray(x), dtype=dtype)


def test_audio_vae_encode_decode(pair):
  ref, ours, name = pair
  cfg = ours.config.audio_vae
  rng = np.random.default_rng(0)
  length = 7 * cfg.hop_length + 5  # not a multiple of the hop: exercises the right padding
  audio = rng.uniform(-0.5, 0.5, (2, length)).astype(np.float32)
  with torch.no_grad():
    ref_mu = ref.audio_vae.encode(_t(audio)[:, None], cfg.sample_rate).numpy()
  assert_close(f"{name} AudioVAE encode", jax.jit(lambda v, a: v.encode(a))(ours.audio_vae, jnp.asarray(audio)),
               ref_mu.transpose(0, 2, 1))

  z = rng.normal(size=(2, 9, cfg.latent_dim)).astype(np.float32)
  with torch.no_grad():
    ref_wav = ref.audio_vae.decode(_t(z).transpose(1, 2)).numpy()[:, 0]
  decode = jax.jit(lambda v, z, rate: v.decode(z, rate))
  assert_close(f"{name} AudioVAE decode", decode(ours.audio_vae, jnp.asarray(z), cfg.output_sample_rate), ref_wav)
  if cfg.sr_bin_boundaries is not None:  # another conditioning bucket than the default output rate
    with torch.no_grad():
      ref_wav = ref.audio_vae.decode(_t(z).transpose(1, 2), torch.tensor([16000], dtype=torch.int32)).numpy()[:, 0]
    assert_close(f"{name} AudioVAE decode @16k bucket", decode(ours.audio_vae, jnp.asarray(z), 16000), ref_wav)


def test_local_encoder(pair):
  ref, ours, name = pair
  c = ours.config
  x = np.random.default_rng(1).normal(size=(2, 5, c.patch_size, c.feat_dim)).astype(np.float32)
  with torch.no_grad():
    expected = ref.feat_encoder(_t(x)).numpy()
  assert_close(f"{name} LocEnc", ours.model.local_encoder(jnp.asarray(x)), expected)


def test_local_dit_velocity(pair):
  ref, ours, name = pair
  c = ours.config
  rng = np.random.default_rng(2)
  n = 3
  x = rng.normal(size=(n, c.patch_size, c.feat_dim)).astype(np.float32)
  cond = rng.normal(size=(n, c.patch_size, c.feat_dim)).astype(np.float32)
  mu = rng.normal(size=(n, c.dit_condition_tokens * c.dit.hidden_size)).astype(np.float32)
  t = rng.uniform(size=n).astype(np.float32)
  dt = rng.uniform(0, 0.3, size=n).astype(np.float32)  # non-zero: covers the delta-time branch
  with torch.no_grad():
    expected = ref.feat_decoder.estimator(_t(x).transpose(1, 2), _t(mu), _t(t), _t(cond).transpose(1, 2), _t(dt))
  ours_v = ours.model.local_dit(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(t), jnp.asarray(cond), jnp.asarray(dt))
  assert_close(f"{name} LocDiT velocity", ours_v, expected.numpy().transpose(0, 2, 1))


def _training_batch(config, seed=3):
  """Two packed sequences: [text, audio_start, target patches] and a shorter one with padding."""
  rng = np.random.default_rng(seed)
  p, d = config.patch_size, config.feat_dim
  rows = [(4, 4, 0), (3, 3, 2)]  # (text tokens incl. audio start, target patches, padding)
  t = sum(rows[0])
  tokens, text_mask, audio_mask, feats, labels = (np.zeros((2, t), np.int64), np.zeros((2, t)), np.zeros((2, t)),
                                                  np.zeros((2, t, p, d), np.float32), np.zeros((2, t), np.int64))
  for i, (n_text, n_audio, _) in enumerate(rows):
    tokens[i, :n_text - 1] = rng.integers(3, 300, n_text - 1)
    tokens[i, n_text - 1] = 101
    text_mask[i, :n_text] = 1
    audio_mask[i, n_text:n_text + n_audio] = 1
    feats[i, n_text:n_text + n_audio] = rng.normal(size=(n_audio, p, d))
    labels[i, n_text + n_audio - 1] = 1
  return dict(text_tokens=tokens, text_mask=text_mask.astype(np.float32), audio_feats=feats,
              audio_mask=audio_mask.astype(np.float32), loss_mask=audio_mask.astype(np.float32), labels=labels)


def _reference_flow_noise(seed, n, patch, feat_dim):
  """Replays the reference compute_loss RNG stream (same seed, same draw order)."""
  torch.manual_seed(seed)
  keep = torch.rand(n) > 0.1
  torch.rand(n)  # noisy-condition mask (noise_cond_scale is 0)
  torch.randn(n, feat_dim, patch)  # noisy-condition noise
  torch.randn(n)  # s_r
  s_t = torch.randn(n)
  torch.rand(n)  # r != t mask (mean mode off)
  z = torch.randn(n, feat_dim, patch)
  return FlowNoise(keep_condition=jnp.asarray(keep.float().numpy()), t=jnp.asarray(torch.sigmoid(s_t - 0.4).numpy()),
                   z=jnp.asarray(z.numpy().transpose(0, 2, 1)))


def test_teacher_forcing_hidden_states_and_loss(pair):
  ref, ours, name = pair
  c = ours.config
  batch = _training_batch(c)
  captured = {}
  hooks = [getattr(ref, attr).register_forward_hook(lambda m, i, o, k=attr: captured.__setitem__(k, o))
           for attr in ("feat_encoder", "base_lm", "residual_lm")]
  hooks.append(ref.feat_decoder.estimator.register_forward_hook(lambda m, i, o: captured.__setitem__("dit", o)))
  ref.train()
  try:
    torch.manual_seed(1234)
    out = ref(_t(batch["text_tokens"], torch.long), _t(batch["text_mask"]), _t(batch["audio_feats"]),
              _t(batch["audio_mask"]), _t(batch["loss_mask"]), None, _t(batch["labels"], torch.long))
  finally:
    ref.eval()
    for h in hooks:
      h.remove()

  jbatch = VoxCPMBatch(**{k: jnp.asarray(v) for k, v in batch.items()})
  b, t = batch["text_tokens"].shape
  noise = _reference_flow_noise(1234, b * t, c.patch_size, c.feat_dim)
  states, (total, terms) = _teacher_forcing_and_loss(ours.model, jbatch, noise)

  assert_close(f"{name} LocEnc (training batch)", ours.model.local_encoder(jbatch.audio_feats),
               captured["feat_encoder"].detach().numpy())
  assert_close(f"{name} TSLM hidden", states["tslm_hidden"], captured["base_lm"][0].detach().numpy())
  assert_close(f"{name} RALM hidden", states["ralm_hidden"], captured["residual_lm"][0].detach().numpy())
  assert_close(f"{name} loss/diff", terms["diffusion"], out["loss/diff"].item())
  assert_close(f"{name} loss/stop", terms["stop"], out["loss/stop"].item())
  assert_close(f"{name} loss total", total, out["loss/diff"].item() + out["loss/stop"].item())
  # The velocity the loss was computed from, for every (batch, position) row.
  mu = states["mu"].reshape(b * t, -1) * noise.keep_condition[:, None]
  target = jbatch.audio_feats.reshape(b * t, c.patch_size, c.feat_dim)
  prev = jnp.pad(jbatch.audio_feats, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1].reshape(target.shape)
  y = (1 - noise.t[:, None, None]) * target + noise.t[:, None, None] * noise.z
  v = ours.model.local_dit(y, mu, noise.t, prev, jnp.zeros_like(noise.t))
  assert_close(f"{name} LocDiT velocity (training batch)", v, captured["dit"].detach().numpy().transpose(0, 2, 1))


@jax.jit
def _teacher_forcing_and_loss(model, batch, noise):
  return teacher_forcing(model, batch, training=True), voxcpm_loss(model, batch, noise, training=True)


def _prompt(config, mode, rng):
  """A prompt in one of the reference's sequence layouts, as token/mask/feature arrays (batch 1)."""
  p, d = config.patch_size, config.feat_dim
  text = list(rng.integers(3, 300, 5)) + [101]
  tokens, text_mask, audio_mask, feats = list(text), [1] * len(text), [0] * len(text), [np.zeros((p, d))] * len(text)
  if mode in ("continuation", "reference+continuation"):
    for _ in range(3):
      tokens.append(0); text_mask.append(0); audio_mask.append(1); feats.append(rng.normal(size=(p, d)))
  if mode in ("reference", "reference+continuation"):
    ref_len = 2
    tokens = [103] + [0] * ref_len + [104] + tokens
    text_mask = [1] + [0] * ref_len + [1] + text_mask
    audio_mask = [0] + [1] * ref_len + [0] + audio_mask
    feats = [np.zeros((p, d))] + [rng.normal(size=(p, d)) for _ in range(ref_len)] + [np.zeros((p, d))] + feats
  return (np.array([tokens]), np.array([text_mask], np.int32), np.array([audio_mask], np.int32),
          np.stack(feats)[None].astype(np.float32))


@functools.partial(jax.jit, static_argnums=(6,))
def _generate(model, tokens, text_mask, feats, audio_mask, noise, steps):
  state = prefill(model, tokens, text_mask, feats, audio_mask, cache_length=64)
  patches, stops, _ = generate_fixed(model, state, noise, num_steps=steps, cfg_value=2.0)
  return patches, stops


def _modes(version):
  return ["zero-shot", "continuation"] + (["reference", "reference+continuation"] if version == 2 else [])


@pytest.mark.slow
def test_generation_fixed_patches(pair):
  """A whole generation of N patches (CFG 2, sway-scheduled Euler with CFG-Zero*, injected
  noise), then the AudioVAE decode of the generated latents, in every prompt layout."""
  ref, ours, name = pair
  c = ours.config
  n_patches = 5
  stop_logits = []
  hook = ref.stop_head.register_forward_hook(lambda m, i, o: stop_logits.append(o.detach().numpy()))
  try:
    for mode_index, mode in enumerate(_modes(c.version)):
      steps = 10 if mode_index % 2 == 0 else 4
      tokens, text_mask, audio_mask, feats = _prompt(c, mode, np.random.default_rng(10 + mode_index))
      seed = 100 + mode_index
      torch.manual_seed(seed)
      noise = np.stack([torch.randn(1, c.feat_dim, c.patch_size).numpy().transpose(0, 2, 1) for _ in range(n_patches)])
      stop_logits.clear()
      torch.manual_seed(seed)
      with torch.no_grad():
        ref_feat, ref_seq = ref.inference(_t(tokens, torch.long), _t(text_mask, torch.int32), _t(feats),
                                          _t(audio_mask, torch.int32), min_len=n_patches, max_len=n_patches,
                                          inference_timesteps=steps, cfg_value=2.0)
      ref_patches = ref_seq.numpy()[-n_patches:]

      patches, stops = _generate(ours.model, jnp.asarray(tokens), jnp.asarray(text_mask), jnp.asarray(feats),
                                 jnp.asarray(audio_mask), jnp.asarray(noise), steps)
      label = f"{name} generate {mode} ({steps} steps)"
      assert_close(f"{label} patches", patches[0], ref_patches)
      assert_close(f"{label} stop logits", stops[0], np.concatenate(stop_logits)[:n_patches])

      latents = ref_patches.reshape(1, n_patches * c.patch_size, c.feat_dim)
      with torch.no_grad():
        ref_wav = ref.audio_vae.decode(_t(latents).transpose(1, 2)).numpy()[:, 0]
      ours_wav = ours.audio_vae.decode(patches.reshape(1, -1, c.feat_dim))
      assert_close(f"{label} waveform", ours_wav, ref_wav)
  finally:
    hook.remove()
