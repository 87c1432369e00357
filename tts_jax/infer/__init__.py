"""Inference: compiled generation loops, batching, streaming and the public Synthesizer API."""
