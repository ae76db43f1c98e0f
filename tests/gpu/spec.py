"""A GPU spec of round numbers, for hand-computed predictions."""

from simcim.gpu.model import GPUSpec

SPEC = GPUSpec(name="unit", copy_gbps=1000.0, mem_latency_us=1.0, l2_gbps=4000.0, mma_tflops=100.0,
               fma_tops=10.0, unpack_tops=5.0, exp_tops=2.0, load_tops=1.0, launch_us=2.0, l2_mib=50.0, sms=132,
               kernel_min_us=2.0, l2_iter_us=0.5, dram_iter_us=1.5, sm_gbps=10.0, attn_tflops=50.0,
               cublas_min_us=3.0, sdpa_min_us=7.0, dram_hop_us=0.75, l2_hop_us=0.25, regs_per_sm=65536,
               smem_per_sm_kib=228.0)
