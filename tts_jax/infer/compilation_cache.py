"""The persistent XLA compilation cache, so that a second run does not recompile."""

from __future__ import annotations

import os

import jax

_DEFAULT = os.path.join(os.path.expanduser("~"), ".cache", "tts_jax", "xla")


def enable_compilation_cache(directory: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache (unless the user configured one already).

  The directory is `directory`, else $TTS_JAX_COMPILATION_CACHE, else ~/.cache/tts_jax/xla;
  setting $TTS_JAX_COMPILATION_CACHE to an empty string disables it. Returns the directory used.
  """
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  directory = directory if directory is not None else os.environ.get("TTS_JAX_COMPILATION_CACHE", _DEFAULT)
  if not directory:
    return None
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return directory
