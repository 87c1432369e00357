"""Importers of official PyTorch checkpoints."""
