"""Shared test setup: CPU-only JAX, deterministic threads, and the parity-error summary."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

import parity  # noqa: E402


def pytest_terminal_summary(terminalreporter):
  if not parity.RESULTS:
    return
  terminalreporter.section("numerical parity with the reference implementation (max abs error, tolerance 1e-4)")
  width = max(len(label) for label, *_ in parity.RESULTS)
  for label, shape, err, scale in parity.RESULTS:
    terminalreporter.write_line(f"{label:<{width}}  {err:9.2e}   shape {list(shape)}, reference max |x| {scale:.3g}")


