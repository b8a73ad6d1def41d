"""The inference engine: GGUF model, tokenizer, sampler and the forward pass they serve."""
