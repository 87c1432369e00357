"""The public VoxCPM inference API.

    from tts_jax.infer.synthesizer import Synthesizer

    synth = Synthesizer.from_pretrained("/models/VoxCPM2")            # dtype="bfloat16" for bf16
    audio, rate = synth.generate("Hello there.")                      # zero-shot
    audio, rate = synth.generate("(a calm, low voice)Hello.")          # voice design
    audio, rate = synth.generate("Go on.", prompt_wav="me.wav", prompt_text="What I said.")
    audios, rate = synth.generate(["One.", "Two."], reference_wav="me.wav", seed=7)  # batched
    for chunk in synth.generate_streaming("A long sentence."): ...

Batches of texts (with their own prompts) are generated together by one compiled loop, each
sequence stopping on its own; shapes are bucketed to powers of two so that recompilation is
rare, and the XLA compilation cache persists compiled programs across runs.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tts_jax.audio.io import load_audio
from tts_jax.convert.voxcpm import PretrainedVoxCPM, load_voxcpm
from tts_jax.infer.compilation_cache import enable_compilation_cache
from tts_jax.infer.voxcpm_loop import PromptBatch, _noise, generate_patches, start_stream, stream_step
from tts_jax.infer.voxcpm_prompt import PromptSequence, bucket, build_sequence, left_pad_batch, normalize_text
from tts_jax.nn.params import cast_floating_params
from tts_jax.nn.transformer import unstack_all_layers

CFG_RANGE = (0.1, 10.0)
TIMESTEPS_RANGE = (1, 100)
_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


@dataclasses.dataclass
class _Request:
  sequence: PromptSequence
  min_len: int
  max_len: int
  seed: int


_vae_encode = jax.jit(lambda vae, audio: vae.encode(audio))
_vae_decode = jax.jit(lambda vae, z: vae.decode(z))
_vae_stream = jax.jit(lambda vae, z, state: vae.decode_stream(z, state))


def _per_utterance(value, count: int, name: str) -> list:
  if value is None or isinstance(value, str):
    return [value] * count
  values = list(value)
  if len(values) != count:
    raise ValueError(f"{name} has {len(values)} entries for {count} texts")
  return values


class Synthesizer:
  """Text-to-speech with an imported VoxCPM (see the module docstring)."""

  def __init__(self, pretrained: PretrainedVoxCPM, *, dtype: str = "float32", unstack_layers: bool = True,
               compilation_cache: bool = True):
    if pretrained.tokenizer is None:
      raise ValueError("the Synthesizer needs the model's tokenizer (load with load_tokenizer=True)")
    if dtype not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if compilation_cache:
      enable_compilation_cache()
    self.config = pretrained.config
    self.tokenizer = pretrained.tokenizer
    self.model = pretrained.model
    self.audio_vae = pretrained.audio_vae  # always float32, as in the reference
    self.dtype = _DTYPES[dtype]
    if unstack_layers:
      unstack_all_layers(self.model)  # several times faster decoding on CPU, same results
    if self.dtype != jnp.float32:
      cast_floating_params(self.model, self.dtype)
    self._latent_cache: dict[tuple[str, str], np.ndarray] = {}

  @classmethod
  def from_pretrained(cls, model_dir: str, *, dtype: str = "float32", lora_path: str | None = None,
                      lora_alpha: float | None = None, **kwargs) -> "Synthesizer":
    return cls(load_voxcpm(model_dir, lora_path=lora_path, lora_alpha=lora_alpha), dtype=dtype, **kwargs)

  @property
  def sample_rate(self) -> int:
    return self.config.audio_vae.output_sample_rate

  # --- requests -----------------------------------------------------------------------------------
  def _prompt_latents(self, path: str, padding: str) -> np.ndarray:
    """[patches, P, D] latents of an audio file, padded to whole patches on `padding`'s side."""
    key = (path, padding)
    if key not in self._latent_cache:
      vae = self.config.audio_vae
      audio = load_audio(path, vae.sample_rate)
      patch_samples = self.config.samples_per_patch
      extra = (-len(audio)) % patch_samples
      audio = np.pad(audio, (extra, 0) if padding == "left" else (0, extra))
      frames = len(audio) // vae.hop_length
      # The encoder is causal: right-padding to a bucket and cutting leaves the latents unchanged.
      padded = np.pad(audio, (0, bucket(frames) * vae.hop_length - len(audio)))
      latents = np.asarray(_vae_encode(self.audio_vae, jnp.asarray(padded[None])))[0, :frames]
      self._latent_cache[key] = latents.reshape(-1, self.config.patch_size, self.config.feat_dim)
    return self._latent_cache[key]

  def _requests(self, texts, prompt_wav, prompt_text, reference_wav, *, cfg_value, inference_timesteps, min_len,
                max_len, seed, ratio) -> list[_Request]:
    if not CFG_RANGE[0] <= cfg_value <= CFG_RANGE[1]:
      raise ValueError(f"cfg_value must be between {CFG_RANGE[0]} and {CFG_RANGE[1]}, got {cfg_value}")
    if not (isinstance(inference_timesteps, int) and TIMESTEPS_RANGE[0] <= inference_timesteps <= TIMESTEPS_RANGE[1]):
      raise ValueError(f"inference_timesteps must be an integer between {TIMESTEPS_RANGE[0]} and "
                       f"{TIMESTEPS_RANGE[1]}, got {inference_timesteps!r}")
    if min_len < 0 or max_len < 1:
      raise ValueError(f"need min_len >= 0 and max_len >= 1, got min_len={min_len}, max_len={max_len}")
    n = len(texts)
    prompt_wavs = _per_utterance(prompt_wav, n, "prompt_wav")
    prompt_texts = _per_utterance(prompt_text, n, "prompt_text")
    reference_wavs = _per_utterance(reference_wav, n, "reference_wav")
    seeds = [seed + i for i in range(n)] if isinstance(seed, int) else _per_utterance(seed, n, "seed")
    requests = []
    for i, text in enumerate(texts):
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text {i} is empty; give the words to speak")
      if (prompt_wavs[i] is None) != (prompt_texts[i] is None):
        raise ValueError("prompt_wav and prompt_text go together: give both (continuation cloning) or neither")
      if reference_wavs[i] is not None and self.config.version != 2:
        raise ValueError("reference_wav (isolated reference cloning) needs a VoxCPM2 model; this is VoxCPM v1 — "
                         "use prompt_wav with prompt_text instead")
      prompt = self._prompt_latents(prompt_wavs[i], "left") if prompt_wavs[i] is not None else None
      reference = self._prompt_latents(reference_wavs[i], "right") if reference_wavs[i] is not None else None
      seq = build_sequence(self.tokenizer.encode, self.config, normalize_text(text), prompt_texts[i], prompt, reference)
      room = self.config.max_length - seq.length
      if room < 1:
        allowed = self.config.max_length - 1 - (seq.length - seq.target_tokens)
        raise ValueError(f"text {i} is too long: its sequence needs {seq.length} positions ({seq.target_tokens} text "
                         f"tokens) but this model's max_length is {self.config.max_length}; with this prompt at most "
                         f"{max(allowed, 0)} text tokens fit")
      cap = min(max_len, int(seq.target_tokens * ratio + 10), room)
      requests.append(_Request(sequence=seq, min_len=min_len, max_len=cap, seed=int(seeds[i])))
    return requests

  # --- generation ----------------------------------------------------------------------------------
  def _prompt_batch(self, chunk: list[_Request], attempt: int) -> tuple[PromptBatch, int, int]:
    size = bucket(len(chunk), 1)
    padded = chunk + [chunk[0]] * (size - len(chunk))
    length = bucket(max(r.sequence.length for r in chunk))
    arrays = left_pad_batch([r.sequence for r in padded], length)
    keys = [jax.random.key(r.seed) for r in padded]
    if attempt:
      keys = [jax.random.fold_in(k, attempt) for k in keys]
    max_len = np.array([r.max_len for r in chunk] + [0] * (size - len(chunk)), np.int32)
    batch = PromptBatch(tokens=jnp.asarray(arrays["tokens"]), text_mask=jnp.asarray(arrays["text_mask"]),
                        audio_mask=jnp.asarray(arrays["audio_mask"]),
                        feats=jnp.asarray(arrays["feats"], self.dtype), left_pad=jnp.asarray(arrays["left_pad"]),
                        min_len=jnp.asarray([r.min_len for r in padded], jnp.int32), max_len=jnp.asarray(max_len),
                        keys=jnp.stack(keys))
    return batch, length, bucket(int(max_len.max()))

  def _generate_chunk(self, chunk: list[_Request], cfg_value, steps, attempt, noise) -> list[np.ndarray]:
    batch, length, max_patches = self._prompt_batch(chunk, attempt)
    injected = None
    if noise is not None:
      b = batch.tokens.shape[0]
      injected = np.zeros((max_patches, b) + noise[0].shape[1:], np.float32)
      for j, z in enumerate(noise):
        count = min(len(z), max_patches)
        injected[:count, j] = z[:count]
      injected = jnp.asarray(injected)
    patches, lengths = generate_patches(self.model, batch, jnp.float32(cfg_value), injected, max_patches=max_patches,
                                        cache_length=length + max_patches, num_steps=steps)
    patches, lengths = jax.device_get((patches.astype(jnp.float32), lengths))
    return [patches[j, :lengths[j]] for j in range(len(chunk))]

  def _generate_all(self, requests: list[_Request], *, cfg_value, steps, batch_size, noise, retry, retry_times,
                    ratio, progress) -> list[np.ndarray]:
    order = sorted(range(len(requests)), key=lambda i: requests[i].sequence.length)
    results: list[np.ndarray | None] = [None] * len(requests)
    pending, attempt = order, 0
    bar = tqdm(total=len(requests), desc="synthesizing", unit="utt", disable=not progress)
    while pending:
      for start in range(0, len(pending), batch_size):
        ids = pending[start:start + batch_size]
        chunk_noise = [noise[i] for i in ids] if noise is not None else None
        for i, patches in zip(ids, self._generate_chunk([requests[i] for i in ids], cfg_value, steps, attempt,
                                                        chunk_noise)):
          results[i] = patches
      attempt += 1
      # The reference's bad-case retry: an utterance far longer than its text is sampled again.
      bad = [i for i in pending if len(results[i]) >= requests[i].sequence.target_tokens * ratio]
      bad = bad if retry and attempt < retry_times else []
      bar.update(len(pending) - len(bad))
      pending = bad
    bar.close()
    return results

  def _decode(self, requests: list[_Request], patches: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Waveforms: each utterance's latents decoded after its prompt context, which is cut off."""
    p, d = self.config.patch_size, self.config.feat_dim
    hop = p * self.config.audio_vae.decode_hop_length
    out = []
    for start in range(0, len(requests), batch_size):
      ids = list(range(start, min(start + batch_size, len(requests))))
      latents = [np.concatenate([requests[i].sequence.decode_context, patches[i]]).reshape(-1, d) for i in ids]
      frames = bucket(max(len(z) for z in latents))
      z = np.zeros((bucket(len(ids), 1), frames, d), np.float32)
      for j, lat in enumerate(latents):
        z[j, :len(lat)] = lat
      audio = np.asarray(_vae_decode(self.audio_vae, jnp.asarray(z)))
      for j, i in enumerate(ids):
        skip = len(requests[i].sequence.decode_context) * hop
        out.append(audio[j, skip:skip + len(patches[i]) * hop])
    return out

  def generate(self, text: str | Sequence[str], prompt_wav=None, prompt_text=None, reference_wav=None, *,
               cfg_value: float = 2.0, inference_timesteps: int = 10, min_len: int = 2, max_len: int = 4096,
               seed: int | Sequence[int] = 0, retry_badcase: bool = True, retry_badcase_max_times: int = 3,
               retry_badcase_ratio_threshold: float = 6.0, batch_size: int = 8, noise=None,
               progress: bool = False):
    """Synthesises one text or a list of texts.

    Args:
      text: the words to speak; a "(description)" prefix designs the voice (zero-shot mode).
      prompt_wav, prompt_text: continuation cloning (audio of any rate/channels and its transcript).
      reference_wav: isolated reference cloning (VoxCPM2). Prompts can be one value for all texts
        or a list with one entry per text.
      cfg_value: guidance scale in [0.1, 10]; inference_timesteps: Euler steps in [1, 100].
      min_len, max_len: patch limits; max_len is also capped at 6 x target tokens + 10 and by the
        model's max_length, as in the reference.
      seed: an int (text i uses seed + i) or one seed per text; the same seed gives the same audio
        whether the text is generated alone or in a batch.
      retry_badcase: regenerate (with new noise, up to `retry_badcase_max_times` attempts) an
        utterance of at least `retry_badcase_ratio_threshold` patches per text token.
      noise: optional list (one per text) of [patches, P, D] standard-normal flow noise to use
        instead of `seed`, to reproduce another implementation's random stream.
    Returns:
      (waveform float32 [samples], sample rate) for a str, (list of waveforms, rate) for a list.
    """
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    if not texts:
      raise ValueError("no text to synthesise")
    if noise is not None:
      noise = [np.asarray(z, np.float32) for z in noise]
      if len(noise) != len(texts):
        raise ValueError(f"noise has {len(noise)} entries for {len(texts)} texts")
      retry_badcase = False  # injected noise fixes the result; a retry could not change it
    ratio = retry_badcase_ratio_threshold
    requests = self._requests(texts, prompt_wav, prompt_text, reference_wav, cfg_value=cfg_value,
                              inference_timesteps=inference_timesteps, min_len=min_len, max_len=max_len, seed=seed,
                              ratio=ratio)
    patches = self._generate_all(requests, cfg_value=cfg_value, steps=inference_timesteps, batch_size=batch_size,
                                 noise=noise, retry=retry_badcase, retry_times=retry_badcase_max_times, ratio=ratio,
                                 progress=progress)
    audios = self._decode(requests, patches, batch_size)
    return (audios[0] if single else audios), self.sample_rate

  def generate_streaming(self, text: str, prompt_wav=None, prompt_text=None, reference_wav=None, *,
                         cfg_value: float = 2.0, inference_timesteps: int = 10, min_len: int = 2,
                         max_len: int = 4096, seed: int = 0) -> Iterator[np.ndarray]:
    """Yields the audio of each patch as soon as it is generated.

    The chunks concatenate to exactly what `generate` returns for the same arguments (no
    bad-case retry): the same noise is drawn and the causal VAE decoder carries its state.
    """
    if not isinstance(text, str):
      raise ValueError("generate_streaming takes one text (a str)")
    request = self._requests([text], prompt_wav, prompt_text, reference_wav, cfg_value=cfg_value,
                             inference_timesteps=inference_timesteps, min_len=min_len, max_len=max_len, seed=seed,
                             ratio=6.0)[0]
    batch, length, max_patches = self._prompt_batch([request], 0)
    state = start_stream(self.model, batch, cache_length=length + max_patches)
    decoder = self.audio_vae.decode_stream_init(1)
    context = request.sequence.decode_context
    if len(context):  # prime the decoder with the prompt's last patches, as `generate` decodes them
      _, decoder = _vae_stream(self.audio_vae, jnp.asarray(context.reshape(1, -1, self.config.feat_dim)), decoder)
    p, d = self.config.patch_size, self.config.feat_dim
    for i in range(request.max_len):
      z = _noise(batch.keys, i, (p, d), self.dtype)
      state, patch, stop = stream_step(self.model, state, z, jnp.float32(cfg_value), num_steps=inference_timesteps)
      audio, decoder = _vae_stream(self.audio_vae, patch.astype(jnp.float32), decoder)
      yield np.asarray(audio[0])
      if i > min_len and int(jnp.argmax(stop[0])) == 1:
        break
