"""Simulated vs measured: one compressed model on the GPU, in the GPU model and on the simulated accelerators.

* ``decode_step``: the kernels of one decode step (and the prefill attention) at a model's shapes;
* ``measure``: runs and times them on a CUDA GPU with the Triton kernels (per kernel and end to end);
* ``quality``: perplexity of the compressed model, digital and on simulated CIM crossbars;
* ``experiment``: the ``sim_vs_measured`` experiment kind; ``report``: scatter, table and MAPE.
"""
