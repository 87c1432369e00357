"""VoxCPM model behaviour in JAX alone: gradients, learning on one batch, sampler constants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tts_jax.convert.voxcpm_config import voxcpm_config_from_official
from tts_jax.models.flow.cfm import cfg_zero_star_skipped_steps, euler_times, sway_time_grid
from tts_jax.models.voxcpm.loss import VoxCPMBatch, sample_voxcpm_noise, voxcpm_loss
from tts_jax.models.voxcpm.model import VoxCPM
from voxcpm_reference import topology


def _model(name="v2_a"):
  config = voxcpm_config_from_official(topology(name))
  return VoxCPM(config, rngs=nnx.Rngs(0))


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, t, p, d = 2, 8, config.patch_size, config.feat_dim
  text = np.zeros((b, t), np.float32)
  text[:, :3] = 1
  audio = 1 - text
  tokens = np.where(text > 0, rng.integers(3, 300, (b, t)), 0)
  tokens[:, 2] = 101
  feats = rng.normal(size=(b, t, p, d)).astype(np.float32) * audio[..., None, None]
  labels = np.zeros((b, t), np.int32)
  labels[:, -1] = 1
  return VoxCPMBatch(text_tokens=jnp.asarray(tokens), text_mask=jnp.asarray(text), audio_feats=jnp.asarray(feats),
                     audio_mask=jnp.asarray(audio), loss_mask=jnp.asarray(audio), labels=jnp.asarray(labels))


def test_gradients_reach_every_trained_parameter():
  model = _model()
  batch = _batch(model.config)
  noise = sample_voxcpm_noise(jax.random.key(0), model, batch)
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(params):
    return voxcpm_loss(nnx.merge(graphdef, params), batch, noise)[0]

  grads = jax.jit(jax.grad(loss_fn))(params)
  for path, g in nnx.to_flat_state(grads):
    value = np.asarray(g.get_value())
    assert np.all(np.isfinite(value)), path
    # The TSLM is trained only through the straight-through FSQ estimator and the stop head.
    if path[0] in ("tslm", "ralm", "local_dit", "local_encoder", "fsq") and path[-1] != "embedding":
      assert np.abs(value).max() > 0, f"no gradient reaches {path}"


def test_overfits_one_batch():
  """With the flow noise held fixed, 150 Adam steps cut the loss on one batch by over 5x."""
  model = _model("v1_a")
  batch = _batch(model.config, seed=1)
  noise = sample_voxcpm_noise(jax.random.key(1), model, batch)
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(lambda p: voxcpm_loss(nnx.merge(graphdef, p), batch, noise)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_sway_time_grid_and_cfg_zero_star_constants():
  np.testing.assert_allclose(sway_time_grid(10), [1, .9564, .9090, .8540, .7878, .7071, .6090, .4910, .3511, .1877, 0],
                             atol=1e-4)
  times, deltas = euler_times(10)
  np.testing.assert_allclose(np.cumsum(deltas)[-1], 1.0, atol=1e-6)
  assert times[0] == 1.0 and cfg_zero_star_skipped_steps(10) == 1 and cfg_zero_star_skipped_steps(50) == 2
