"""tts_jax: JAX/Flax library and trainer for LLM-based text-to-speech systems."""

__version__ = "0.1.0"
