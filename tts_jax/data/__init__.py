"""Data: tokenizers, manifests, corpora and input pipelines."""
