"""The generation benchmark: warm-up, N timed generations with device syncs, MFU and memory.

``run_bench(BenchConfig(...))`` builds a randomly initialised model (latency does not depend on
the weights), generates ``duration_s`` seconds of codes from random semantic ids with the
sampler's schedule and returns a JSON-ready dict. Every timed run ends with ``backend.sync()``.

Peak memory is the growth of the device's memory high-water mark over a baseline taken right
before the model is built (CPU: resident set size, ``VmHWM − VmRSS``; CUDA: allocator peak; XLA:
the runtime's ``peak_bytes_used`` when reported), so it covers the weights, the activations and
the sampler, and not the interpreter and libraries loaded before. The high-water mark is restarted
once the model is ready for inference, so the fp32 weights an int8 run quantises and frees
(``dtype=int8`` on the CPU) are not counted; the int8 weights still are.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from soundstorm._optional import require
from soundstorm.backends import NAMES, get_backend, resolve_name
from soundstorm.bench.flops import flops_per_pass, measure_matmul_peak
from soundstorm.model import PRESETS, SoundStorm, SoundStormConfig
from soundstorm.quantize import weights_bytes
from soundstorm.resources import check_memory, estimate_generation
from soundstorm.sampler import SamplerConfig, generate
from soundstorm.backends.cuda_graphs import GraphedModel
from soundstorm.bench.autoregressive import estimate_autoregressive
from soundstorm.bench.train_step import run_train_bench

MODES = ("generate", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": "int8"}  # int8: CPU inference only


@dataclass
class BenchConfig:
    """What to benchmark. Defaults: the paper preset, 30 s, batch 1, the paper's sampler (16, 1, …, 1), auto
    backend. ``model`` and ``sampler`` are the library's own configs (``soundstorm-bench`` builds them from
    the ``model`` and ``sampler`` config groups, as training and evaluation do)."""

    mode: str = "generate"  # "generate": sampler latency; "train": one training step (soundstorm.bench.train_step)
    model: SoundStormConfig = dataclasses.field(default_factory=SoundStormConfig.paper)
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    duration_s: float = 30.0
    frame_rate_hz: float = 50.0  # SoundStream in the paper; 75 for EnCodec 24 kHz
    batch_size: int = 1
    dtype: str = "float32"  # "float32", "bfloat16" (autocast on CUDA/XLA) or "int8" (CPU)
    compile: bool = False  # torch.compile the model (CUDA/CPU)
    cuda_graphs: bool = False  # capture the sampler's forward pass in a CUDA graph
    codec_decode: bool = False  # include EnCodec-24 kHz decoding of the codes (random weights)
    ar_baseline: bool = False  # estimate level-wise autoregressive decoding with the same backbone
    ar_positions: int = 6
    warmup: int = 1
    warmup_schedule: str = "full"  # "full": the timed schedule; "short": (2, 1, ..., 1), same kernels/graphs
    runs: int = 3
    backend: str = "auto"
    backend_options: dict = dataclasses.field(default_factory=dict)  # e.g. {"num_threads": 2} on the CPU
    matmul_size: int = 4096
    seed: int = 0
    train_ema_decay: float = 0.0  # mode=train: 0 times the step without EMA; the recipe's value adds it
    output_json: str | None = "bench.json"
    memory_check: bool = True  # refuse a run whose estimated peak memory exceeds what the machine has

    def __post_init__(self):
        if not isinstance(self.model, SoundStormConfig):
            raise ValueError(f"BenchConfig.model must be a SoundStormConfig (e.g. SoundStormConfig.tiny()), got "
                             f"{type(self.model).__name__}")
        if not isinstance(self.sampler, SamplerConfig):
            raise ValueError(f"BenchConfig.sampler must be a SamplerConfig, got {type(self.sampler).__name__}")
        self.sampler.resolve(self.model.num_levels)  # a schedule that does not fit the model: refused now
        if not isinstance(self.backend_options, dict):
            raise ValueError(f"BenchConfig.backend_options must be a dict, got {self.backend_options!r}")
        for name in ("duration_s", "frame_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"BenchConfig.{name} must be a positive number, got {value!r}")
        for name, low in (("batch_size", 1), ("runs", 1), ("warmup", 0), ("ar_positions", 2), ("matmul_size", 64)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"BenchConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"BenchConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not (isinstance(self.train_ema_decay, (int, float)) and 0.0 <= self.train_ema_decay < 1.0):
            raise ValueError(f"BenchConfig.train_ema_decay must be in [0, 1), got {self.train_ema_decay!r}")
        if self.warmup_schedule not in ("full", "short"):
            raise ValueError(f"BenchConfig.warmup_schedule must be 'full' or 'short', got {self.warmup_schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"BenchConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.backend not in NAMES:
            raise ValueError(f"BenchConfig.backend must be one of {NAMES}, got {self.backend!r}")
        for name in ("compile", "cuda_graphs", "codec_decode", "ar_baseline", "memory_check"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"BenchConfig.{name} must be true or false, got {getattr(self, name)!r}")

    def num_frames(self) -> int:
        """Codec frames for ``duration_s``; must be a whole number of semantic frames."""
        exact = self.duration_s * self.frame_rate_hz
        num_frames = round(exact)
        if abs(exact - num_frames) > 1e-6 or num_frames < 1 or num_frames % self.model.semantic_upsample:
            raise ValueError(f"BenchConfig.duration_s={self.duration_s} at frame_rate_hz={self.frame_rate_hz} gives "
                             f"{num_frames} frames, expected a positive multiple of semantic_upsample="
                             f"{self.model.semantic_upsample}")
        return num_frames


def model_name(config: SoundStormConfig) -> str:
    """The preset a model config is (``paper``, ``small``, ``tiny``), or ``custom``: the label of a result."""
    return next((name for name in PRESETS if SoundStormConfig.preset(name) == config), "custom")


def _make_backend(cfg: BenchConfig):
    """The backend with its options. The bench's ``dtype`` is the autocast dtype on CUDA and XLA (it
    overrides their yaml's ``options.dtype``); on the CPU ``dtype=int8`` and ``backend.options.dtype=int8``
    both select int8 inference (given both, they must agree). Backends refuse int8, naming the option."""
    name = resolve_name(cfg.backend)
    options = {k: v for k, v in cfg.backend_options.items() if not (name == "cpu" and v is None)}
    option_dtype = options.pop("dtype", None)
    if name == "cpu":
        chosen = sorted({d for d in (option_dtype, cfg.dtype) if d not in (None, "float32")})
        if len(chosen) > 1:
            raise ValueError(f"backend.options.dtype={option_dtype!r} and dtype={cfg.dtype!r} disagree; set one")
        cfg.dtype = chosen[0] if chosen else "float32"
        if cfg.dtype == "bfloat16":
            raise ValueError(f"dtype={cfg.dtype!r} on the cpu backend: expected 'float32' or 'int8'")
        options["dtype"] = cfg.dtype
    else:
        options["dtype"] = "int8" if option_dtype == "int8" else cfg.dtype
        options.pop("num_threads", None)
    return get_backend(name, **options)


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import importlib.metadata as md

        out["soundstorm"] = md.version("soundstorm")
        out["torch_xla"] = md.version("torch_xla")
    except Exception:  # noqa: BLE001 - optional packages
        pass
    return out


def _codec_decoder(device):
    """EnCodec 24 kHz with random weights (same architecture and cost as the real one)."""
    EncodecModel = require("encodec", "soundstorm-bench codec_decode=true (EnCodec 24 kHz)").EncodecModel
    codec = EncodecModel.encodec_model_24khz(pretrained=False).to(device).eval()
    return lambda codes_BQT: codec.decoder(codec.quantizer.decode(codes_BQT.transpose(0, 1)))


def _sampler_runner(cfg: BenchConfig, backend, model):
    """The model the sampler calls: optionally ``torch.compile``-d, optionally replayed as CUDA graphs."""
    capture = getattr(backend, "graph_capture", None)
    if cfg.cuda_graphs and capture is None:
        raise ValueError(f"BenchConfig.cuda_graphs=true needs the cuda backend, got {backend.name!r}")
    runner = torch.compile(model, dynamic=False) if cfg.compile else model
    if cfg.cuda_graphs:
        runner = GraphedModel(runner, capture)
    return runner


class PassCounter:
    """``wrap_logits`` for :func:`generate` that counts the sampler's calls of its logits function.

    Each call runs exactly one forward pass, however the model runs it (eager, compiled, or a
    CUDA-graph replay), so this counts what actually ran, where a forward hook would miss replays.
    """

    def __init__(self):
        self.count = 0

    def __call__(self, logits_fn, codes_BQT):
        def counted(codes, level):
            self.count += 1
            return logits_fn(codes, level)

        return counted


def _timed_generations(cfg, backend, runner, semantic_BS, decode_fn, num_runs, steps):
    """``num_runs`` generations; latencies, decode times, process CPU times and passes of each run."""
    latencies, decode_s, cpu_s, passes = [], [], [], []
    for run in range(num_runs):
        counter = PassCounter()
        backend.sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        with backend.autocast():
            codes_BQT = generate(runner, semantic_BS, config=dataclasses.replace(cfg.sampler, steps=steps, greedy=False),
                                 generator=torch.Generator().manual_seed(cfg.seed + run),
                                 mark_step=backend.mark_step, wrap_logits=counter)
            backend.sync()
            generated = time.perf_counter()
            if decode_fn is not None:
                decode_fn(codes_BQT.clamp(max=runner.config.codebook_size - 1))
                backend.mark_step()
                backend.sync()
        latencies.append(time.perf_counter() - start)
        decode_s.append(time.perf_counter() - generated)
        cpu_s.append(time.process_time() - cpu_start)
        passes.append(counter.count)
    return latencies, decode_s, cpu_s, passes


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark described by ``cfg``; return the results (see ``docs/benchmark.md``)."""
    backend = _make_backend(cfg)
    backend.init_distributed()
    if cfg.mode == "train":
        return _train_result(cfg, backend)
    model_cfg = cfg.model
    num_frames = cfg.num_frames()
    schedule = cfg.sampler.resolve(model_cfg.num_levels)
    memory = _check_memory(cfg, backend, num_frames, schedule)  # before anything large is allocated
    peaks = [measure_matmul_peak(backend, DTYPES[cfg.dtype], cfg.matmul_size)]

    backend.sync()
    baseline_bytes = backend.current_memory_bytes()
    torch.manual_seed(cfg.seed)
    model = SoundStorm(model_cfg).to(backend.device).eval()
    fp32_weights = {"num_parameters": model.num_parameters(), "bytes": weights_bytes(model)}
    model = backend.prepare_inference_model(model)
    backend.reset_peak_memory()
    semantic_BS = torch.randint(0, model_cfg.semantic_vocab_size,
                                (cfg.batch_size, num_frames // model_cfg.semantic_upsample))
    decode_fn = _codec_decoder(backend.device) if cfg.codec_decode else None
    runner = _sampler_runner(cfg, backend, model)

    # warm-up (untimed): every kernel (CPU/CUDA), every graph kind (XLA: set-up, sampling, greedy),
    # the torch.compile and the CUDA-graph capture of every shape; timed runs only replay
    warmup_steps = schedule.steps if cfg.warmup_schedule == "full" else (2,) + (1,) * (model_cfg.num_levels - 1)
    _timed_generations(cfg, backend, runner, semantic_BS, decode_fn, cfg.warmup, warmup_steps)
    captures_before = getattr(runner, "num_captures", None)
    load_before = _load_average()
    latencies, decode_s, cpu_s, passes_per_run = _timed_generations(cfg, backend, runner, semantic_BS, decode_fn,
                                                                    cfg.runs, schedule.steps)
    passes = passes_per_run[-1]
    peak_bytes = backend.peak_memory_bytes()
    peak_growth = None if peak_bytes is None else peak_bytes - (baseline_bytes or 0)
    ar = None
    if cfg.ar_baseline:
        ar = estimate_autoregressive(model, backend, num_frames, cfg.batch_size, cfg.ar_positions)
    peaks.append(measure_matmul_peak(backend, DTYPES[cfg.dtype], cfg.matmul_size))

    result = _summarise(cfg, backend, model, schedule, num_frames, latencies, decode_s, passes, peaks, peak_growth,
                        fp32_weights)
    result["forward_passes_per_run"] = passes_per_run
    result["peak_memory_estimate"] = memory
    if cfg.cuda_graphs:
        result["cuda_graphs"] = {"captures": runner.num_captures, "replays": runner.num_replays,
                                 "captures_in_timed_runs": runner.num_captures - captures_before}
    result["host"] = {"process_cpu_s": cpu_s, "load_average_1min": [load_before, _load_average()],
                      "cpu_share": statistics.median(c / (w * torch.get_num_threads()) for c, w in zip(cpu_s, latencies))}
    if ar is not None:
        ar["speedup_estimate"] = ar["latency_s_estimate"] / result["latency_s_median"]
        result["ar_baseline"] = ar
    backend.shutdown()
    return result


def _check_memory(cfg: BenchConfig, backend, num_frames: int, schedule) -> dict:
    """The run's estimated peak memory (:mod:`soundstorm.resources`; the codec decode of ``codec_decode=true``
    is not included), refused before any allocation when it exceeds what the machine has (unless
    ``memory_check=false``); returns the estimate's parts for the result."""
    sampler = dataclasses.replace(cfg.sampler, steps=schedule.steps, greedy=False)  # what the timed runs decode
    attention_scores = backend.device.type == "xla"  # SDPA's math path keeps [B, H, T, T] scores there
    estimate = estimate_generation(cfg.model, batch_size=cfg.batch_size, num_frames=num_frames, sampler=sampler,
                                   dtype=cfg.dtype, attention_scores=attention_scores)
    pools = estimate.pools(backend.device.type)
    if cfg.memory_check:
        check_memory(estimate, backend.device, f"soundstorm-bench duration_s={cfg.duration_s:g} batch_size="
                     f"{cfg.batch_size} ({num_frames} frames of the {model_name(cfg.model)} model)",
                     "expected a run that fits: a shorter duration_s (activations grow with the frames, at least "
                     "linearly), a smaller batch_size, or a smaller model (model=small, model=tiny); or set "
                     "memory_check=false to try anyway")
    return {"bytes": pools, "weights": estimate.weights, "activations": estimate.activations,
            "definition": "soundstorm.resources.estimate_generation: weights + the traced peak of one sampler call"}


def _train_result(cfg: BenchConfig, backend) -> dict:
    """``mode=train``: the step timing of :mod:`soundstorm.bench.train_step` plus config, device, versions."""
    backend.check_trainable()  # int8 on the CPU is for inference only
    if cfg.compile or cfg.cuda_graphs or cfg.codec_decode or cfg.ar_baseline:
        raise ValueError("BenchConfig.mode='train' times the eager training step; compile, cuda_graphs, "
                         "codec_decode and ar_baseline must be false")
    load_before = _load_average()
    result = run_train_bench(cfg, backend)
    result.update({
        "config": {**dataclasses.asdict(cfg), "model_name": model_name(cfg.model), "num_frames": result["num_frames"],
                   "num_parameters": result["num_parameters"]},
        "device": {**backend.describe(), "machine": platform.machine(), "cpu_model": cpu_model(),
                   "cpu_count": os.cpu_count(), "cpu_threads": torch.get_num_threads()},
        "dtype": cfg.dtype, "versions": _versions(),
        "host": {"load_average_1min": [load_before, _load_average()]},
    })
    backend.shutdown()
    return result


def _load_average() -> float | None:
    """The host's 1-minute load average: other jobs sharing the CPU slow every number down."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


SPEED_FLAGS = ("avx2", "avx512f", "amx_tile")  # the vector units that set a CPU's matmul speed


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first CPU as ``lscpu`` names it, with its family and model numbers and speed flags, e.g.
    ``"AMD EPYC (family 25, model 17; avx2 avx512f)"``: a model name alone ("AMD EPYC", "Intel(R) Xeon(R)
    Processor" on cloud VMs) covers CPUs 2x apart in speed. ``platform.processor()`` where there is no cpuinfo."""
    try:
        with open(cpuinfo) as f:
            fields = {}
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor()
    name = fields.get("model name", "") or platform.processor()
    numbers = ", ".join(f"{label} {fields[key]}" for label, key in (("family", "cpu family"), ("model", "model"))
                        if fields.get(key))
    flags = " ".join(f for f in SPEED_FLAGS if f in fields.get("flags", "").split())
    details = "; ".join(part for part in (numbers, flags) if part)
    return f"{name} ({details})" if details else name


def _summarise(cfg, backend, model, schedule, num_frames, latencies, decode_s, passes, peaks, peak_growth,
               fp32_weights) -> dict:
    """The JSON-ready result: latency statistics, throughput, MFU, memory, device and versions."""
    model_cfg = model.config
    median = statistics.median(latencies)
    flops = flops_per_pass(model_cfg, num_frames, cfg.batch_size)
    peak_flops = max(peaks)
    num_bytes = weights_bytes(model)
    return {
        "config": {**dataclasses.asdict(cfg), "model_name": model_name(model_cfg), "num_frames": num_frames,
                   "steps": list(schedule.steps), "num_parameters": fp32_weights["num_parameters"]},
        "forward_passes": passes,
        "expected_forward_passes": schedule.num_passes,
        "runs": cfg.runs,
        "latency_s": latencies,
        "latency_s_median": median,
        "latency_s_min": min(latencies),
        "latency_s_max": max(latencies),
        "codec_decode_s_median": statistics.median(decode_s) if cfg.codec_decode else None,
        "rtf": median / (cfg.duration_s * cfg.batch_size),
        "frames_per_s": cfg.batch_size * num_frames / median,
        "tokens_per_s": cfg.batch_size * num_frames * model_cfg.num_levels / median,
        "flops_per_pass": flops,
        "achieved_flops_per_s": flops * passes / median,
        "matmul_peak_flops_per_s": peak_flops,
        "matmul_peak_kind": ("int8 dynamically quantised linear (int8 ops/s)" if cfg.dtype == "int8"
                             else f"{cfg.dtype} GEMM"),
        "matmul_peak_samples_flops_per_s": peaks,
        "mfu": flops * passes / median / peak_flops,
        "peak_memory_bytes": peak_growth,
        "peak_memory_definition": "high-water mark during the generations minus the baseline taken right before "
                                  "building the model",
        "weights_bytes": num_bytes,
        "peak_memory_over_weights": None if peak_growth is None else peak_growth / num_bytes,
        "fp32_weights_bytes": fp32_weights["bytes"],
        "peak_memory_over_fp32_weights": None if peak_growth is None else peak_growth / fp32_weights["bytes"],
        "device": {**backend.describe(), "machine": platform.machine(), "cpu_model": cpu_model(),
                   "cpu_count": os.cpu_count(), "cpu_threads": torch.get_num_threads()},
        "dtype": cfg.dtype,
        "versions": _versions(),
    }


def _format_train(result: dict) -> list[tuple[str, str]]:
    return [
        ("training step median / min / max", f"{result['step_s_median']:.3f} / {result['step_s_min']:.3f} / "
                                             f"{result['step_s_max']:.3f} s"),
        ("tokens/s", f"{result['tokens_per_s']:.1f} ({result['tokens_per_step']} acoustic tokens per step)"),
        ("FLOPs per step", f"{result['flops_per_step'] / 1e9:.1f} GFLOP (3 × forward)"),
        ("achieved", f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s"),
        ("matmul peak (measured)", f"{result['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s"),
        ("MFU", f"{result['mfu']:.3f}"),
    ]


def format_table(result: dict) -> str:
    """A human-readable summary of :func:`run_bench`'s result."""
    cfg = result["config"]
    if result.get("mode") == "train":
        rows = [("device", f"{result['device']['backend']} ({result['device']['device']}, "
                           f"{result['device']['cpu_threads']} threads)"),
                ("model", f"{cfg['model_name']} ({cfg['num_parameters'] / 1e6:.2f}M params), dtype {result['dtype']}"),
                ("window", f"{cfg['duration_s']} s = {cfg['num_frames']} frames × {cfg['model']['num_levels']} levels, "
                           f"batch {cfg['batch_size']}"),
                *_format_train(result)]
        if result["peak_memory_bytes"] is not None:
            rows.append(("peak memory", f"{result['peak_memory_bytes'] / 2**20:.0f} MiB = "
                                        f"{result['peak_memory_over_weights']:.2f} × weights"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    unit = "GOP/s (int8 in the linear layers)" if result["dtype"] == "int8" else "GFLOP/s"
    rows = [
        ("device", f"{result['device']['backend']} ({result['device']['device']}, "
                   f"{result['device']['cpu_threads']} threads)"),
        ("model", f"{cfg['model_name']} ({cfg['num_parameters'] / 1e6:.2f}M params), dtype {result['dtype']}"),
        ("audio", f"{cfg['duration_s']} s = {cfg['num_frames']} frames × {cfg['model']['num_levels']} levels, "
                  f"batch {cfg['batch_size']}"),
        ("forward passes", f"{result['forward_passes']} (steps {tuple(cfg['steps'])})"),
        ("latency median / min / max", f"{result['latency_s_median']:.3f} / {result['latency_s_min']:.3f} / "
                                       f"{result['latency_s_max']:.3f} s"),
        ("RTF", f"{result['rtf']:.4f}"),
        ("frames/s", f"{result['frames_per_s']:.1f}"),
        ("FLOPs per pass", f"{result['flops_per_pass'] / 1e9:.1f} GFLOP"),
        ("achieved", f"{result['achieved_flops_per_s'] / 1e9:.1f} {unit}"),
        ("matmul peak (measured)", f"{result['matmul_peak_flops_per_s'] / 1e9:.1f} {unit}"),
        ("MFU", f"{result['mfu']:.3f}"),
    ]
    if result.get("peak_memory_estimate") is not None:
        estimate = result["peak_memory_estimate"]["bytes"]
        rows.append(("peak memory estimate", ", ".join(f"{pool} {size / 2**20:.0f} MiB" for pool, size in estimate.items())))
    if result["peak_memory_bytes"] is not None:
        rows.append(("peak memory", f"{result['peak_memory_bytes'] / 2**20:.0f} MiB = "
                                    f"{result['peak_memory_over_weights']:.2f} × weights "
                                    f"({result['weights_bytes'] / 2**20:.0f} MiB) = "
                                    f"{result['peak_memory_over_fp32_weights']:.2f} × fp32 weights"))
    if result.get("codec_decode_s_median") is not None:
        rows.append(("codec decode (in latency)", f"{result['codec_decode_s_median']:.3f} s"))
    host = result.get("host", {})
    rows.append(("host", f"process CPU share {host.get('cpu_share', float('nan')):.2f} of "
                         f"{result['device']['cpu_threads']} threads, load average {host.get('load_average_1min')}"))
    if "ar_baseline" in result:
        ar = result["ar_baseline"]
        rows.append(("AR baseline (ESTIMATE)", f"{ar['latency_s_estimate']:.1f} s for {ar['sequential_steps']} "
                                               f"steps → speed-up ≈ {ar['speedup_estimate']:.0f}×"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
