"""Audio I/O and JAX signal processing."""
