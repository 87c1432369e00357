"""Audio codecs: VoxCPM's AudioVAE (and later DAC-style discrete codecs)."""
