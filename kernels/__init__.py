"""Triton kernels for quantized, pruned, fused and noisy inference, each beside a PyTorch reference."""
