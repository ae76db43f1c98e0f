"""Crossbar tiles, model conversion, MoE analysis and repairs for compute-in-memory simulation."""
