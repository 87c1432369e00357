"""VoxCPM (OpenBMB): tokenizer-free hierarchical semantic-acoustic TTS, generations 1 and 2."""

from tts_jax.models.voxcpm.config import VoxCPMConfig
from tts_jax.models.voxcpm.model import VoxCPM

__all__ = ["VoxCPM", "VoxCPMConfig"]
