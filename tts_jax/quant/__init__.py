"""Quantizers with straight-through estimators."""
