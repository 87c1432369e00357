"""Model definitions (no training code here)."""
