"""Sparse-workload NPU memory-system simulation (vector runahead) and einsum-cascade dataflow models."""
