"""Models on the GPU: weights, the per-architecture forward plans, KV cache, generation."""
