"""Comparison helper that records every parity check; conftest prints the table after the run."""

from __future__ import annotations

import numpy as np

RESULTS: list[tuple[str, tuple[int, ...], float, float]] = []


def assert_close(label: str, ours, reference, atol: float = 1e-4) -> float:
  """Asserts max |ours - reference| <= atol (same shape) and records the error seen."""
  ours = np.asarray(ours, np.float64)
  reference = np.asarray(reference, np.float64)
  assert ours.shape == reference.shape, f"{label}: shape {ours.shape} != reference {reference.shape}"
  assert np.all(np.isfinite(ours)), f"{label}: non-finite values in our output"
  err = float(np.max(np.abs(ours - reference))) if ours.size else 0.0
  RESULTS.append((label, ours.shape, err, float(np.max(np.abs(reference))) if reference.size else 0.0))
  print(f"parity {label}: max abs err {err:.3e} (reference max |x| {RESULTS[-1][3]:.3g})")
  assert err <= atol, f"{label}: max abs error {err:.3e} > {atol:.0e}"
  return err
