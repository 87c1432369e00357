"""The Synthesizer (compiled loop, batching, streaming, errors) against the reference's public
generation path (`_generate_with_prompt_cache`, what `VoxCPM.generate` calls)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from parity import assert_close
from tts_jax.audio.io import AudioFileError
from tts_jax.infer.synthesizer import Synthesizer
from voxcpm_reference import build_reference, import_reference, write_model_dir

ref_mod = import_reference()
torch = ref_mod.torch
_SETUPS = {}


def _setup(name, tmp_path_factory):
  """(reference model with a real tokenizer, our Synthesizer, folder) for a tiny topology."""
  if name not in _SETUPS:
    from transformers import LlamaTokenizerFast
    from voxcpm.model.utils import mask_multichar_chinese_tokens

    ref, cfg = build_reference(name, seed=3)
    folder = write_model_dir(ref, cfg, str(tmp_path_factory.mktemp(name)))
    ref.text_tokenizer = mask_multichar_chinese_tokens(LlamaTokenizerFast.from_pretrained(folder))
    _SETUPS[name] = (ref, Synthesizer.from_pretrained(folder, compilation_cache=False), folder)
  return _SETUPS[name]


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
  return _setup("v1_a", tmp_path_factory)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
  return _setup("v2_a", tmp_path_factory)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
  """A 16 kHz mono prompt, a 16 kHz reference, and a 44.1 kHz stereo file."""
  folder = tmp_path_factory.mktemp("wav")
  rng = np.random.default_rng(0)
  paths = {}
  for name, rate, shape in [("prompt", 16000, (2200,)), ("reference", 16000, (1300,)), ("stereo", 44100, (5000, 2))]:
    paths[name] = str(folder / f"{name}.wav")
    sf.write(paths[name], rng.uniform(-0.3, 0.3, shape).astype(np.float32), rate)
  return paths


def _reference_cache(ref, version, wavs, mode, prompt_text):
  if mode == "zero-shot":
    return None
  if version == 2:
    kwargs = dict(reference_wav_path=wavs["reference"]) if "reference" in mode else {}
    if "continuation" in mode:
      kwargs.update(prompt_text=prompt_text, prompt_wav_path=wavs["prompt"])
    return ref.build_prompt_cache(**kwargs)
  # v1 reads audio with torchaudio (unavailable here); build its cache the same way from the file.
  audio, _ = sf.read(wavs["prompt"], dtype="float32")
  patch = ref.patch_size * ref.chunk_size
  audio = np.pad(audio, ((-len(audio)) % patch, 0))
  with torch.no_grad():
    feat = ref.audio_vae.encode(torch.tensor(audio)[None, None], 16000)
  return dict(prompt_text=prompt_text, audio_feat=feat.view(ref.audio_vae.latent_dim, -1, ref.patch_size).permute(1, 2, 0))


_MODES = {1: ["zero-shot", "continuation"], 2: ["zero-shot", "continuation", "reference", "reference+continuation"]}


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_generate_matches_reference_public_path(version, v1, v2, wavs):
  """Whole utterances (text -> tokens -> layout -> compiled loop -> VAE with prompt context) equal
  the reference's for the same injected noise and a fixed number of patches."""
  ref, synth, _ = v1 if version == 1 else v2
  c = synth.config
  n = 6
  for k, mode in enumerate(_MODES[version]):
    text, prompt_text = "hello world, this is a test", "the quick brown fox"
    cache = _reference_cache(ref, version, wavs, mode, prompt_text)
    torch.manual_seed(k)
    noise = np.stack([torch.randn(1, c.feat_dim, c.patch_size).numpy()[0].T for _ in range(n)])
    torch.manual_seed(k)
    with torch.no_grad():
      ref_wav = ref.generate_with_prompt_cache(target_text=text, prompt_cache=cache, min_len=n, max_len=n,
                                               inference_timesteps=10 if k % 2 == 0 else 5, cfg_value=2.0,
                                               retry_badcase=False)[0].numpy()[0]
    kwargs = {}
    if "continuation" in mode:
      kwargs.update(prompt_wav=wavs["prompt"], prompt_text=prompt_text)
    if "reference" in mode:
      kwargs.update(reference_wav=wavs["reference"])
    audio, rate = synth.generate(text, min_len=n, max_len=n, inference_timesteps=10 if k % 2 == 0 else 5,
                                 noise=[noise], **kwargs)
    assert rate == c.audio_vae.output_sample_rate
    assert_close(f"v{version} Synthesizer.generate {mode}", audio, ref_wav)


@pytest.mark.slow
def test_batched_equals_unbatched_and_each_stops_on_its_own(v2, wavs):
  _, synth, _ = v2
  texts = ["hi.", "hello world this is a longer test sentence", "the voice"]
  prompts = dict(prompt_wav=[None, wavs["prompt"], None], prompt_text=[None, "the fox", None],
                 reference_wav=[None, None, wavs["reference"]])
  batched, _ = synth.generate(texts, seed=[5, 6, 7], batch_size=4, **prompts)
  alone = [synth.generate(t, seed=s, prompt_wav=pw, prompt_text=pt, reference_wav=rw)[0]
           for t, s, pw, pt, rw in zip(texts, [5, 6, 7], *prompts.values())]
  lengths = [len(a) for a in batched]
  assert lengths == [len(a) for a in alone]
  assert len(set(lengths)) > 1, lengths
  for i, (a, b) in enumerate(zip(batched, alone)):
    assert_close(f"batched vs alone, utterance {i}", a, b)


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_streaming_concatenates_to_generate(version, v1, v2, wavs):
  _, synth, _ = v1 if version == 1 else v2
  for kwargs in [{}, dict(prompt_wav=wavs["prompt"], prompt_text="the fox")]:
    full, _ = synth.generate("hello world", seed=3, retry_badcase=False, **kwargs)
    chunks = list(synth.generate_streaming("hello world", seed=3, **kwargs))
    hop = synth.config.output_samples_per_patch
    assert all(len(c) == hop for c in chunks)
    mode = "continuation" if kwargs else "zero-shot"
    assert_close(f"v{version} streaming vs full decode ({mode})", np.concatenate(chunks), full, atol=1e-5)


def test_prompt_audio_of_any_rate_and_channels(v2, wavs):
  _, synth, _ = v2
  latents = synth._prompt_latents(wavs["stereo"], "right")
  expected = -(-round(5000 * 16000 / 44100) // synth.config.samples_per_patch)
  assert latents.shape == (expected, synth.config.patch_size, synth.config.feat_dim)


def test_user_errors(v1, v2, wavs, tmp_path):
  _, s1, _ = v1
  _, s2, _ = v2
  cases = [
      (s2, dict(text=""), "text 0 is empty"),
      (s2, dict(text="  \n "), "text 0 is empty"),
      (s2, dict(text="hi", prompt_wav=wavs["prompt"]), "prompt_wav and prompt_text go together"),
      (s2, dict(text="hi", prompt_text="the fox"), "prompt_wav and prompt_text go together"),
      (s1, dict(text="hi", reference_wav=wavs["reference"]), "reference_wav .* needs a VoxCPM2 model"),
      (s2, dict(text="hi", cfg_value=0.0), "cfg_value must be between 0.1 and 10"),
      (s2, dict(text="hi", cfg_value=11), "cfg_value must be between 0.1 and 10"),
      (s2, dict(text="hi", inference_timesteps=0), "inference_timesteps must be an integer between 1 and 100"),
      (s2, dict(text="hi", inference_timesteps=101), "inference_timesteps must be an integer between 1 and 100"),
      (s2, dict(text="hi", inference_timesteps=2.5), "inference_timesteps must be an integer"),
      (s2, dict(text="word " * 300), r"text 0 is too long: .* max_length is 256; with this prompt at most \d+ text"),
      (s2, dict(text=["a", "b"], prompt_text=["x"], prompt_wav=["y"]), "prompt_wav has 1 entries for 2 texts"),
  ]
  for synth, kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      synth.generate(**kwargs)
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"RIFF not really a wav file")
  for path, message in [(str(tmp_path / "missing.wav"), "does not exist"), (str(garbage), "cannot read audio file")]:
    with pytest.raises(AudioFileError, match=message):
      s2.generate("hi", reference_wav=path)
  with pytest.raises(ValueError, match="takes one text"):
    next(s2.generate_streaming(["a", "b"]))
