"""Latency, throughput, MFU and memory of generation (``soundstorm-bench``); no Hydra here."""

from soundstorm.bench.flops import flops_per_pass, measure_matmul_peak
from soundstorm.bench.runner import BenchConfig, format_table, run_bench

__all__ = ["BenchConfig", "run_bench", "format_table", "flops_per_pass", "measure_matmul_peak"]
