"""The inference engine: GGUF files, kernels, tokenizers, sampling and the forward pass."""
