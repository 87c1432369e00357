"""Model-agnostic building blocks: dense layers, norms, rotary embeddings, attention, convolutions."""
