"""`soundstorm-bench`: Hydra front end of :mod:`soundstorm.bench` (config ``configs/bench.yaml``).

Examples::

    soundstorm-bench                                   # paper preset, 30 s, batch 1, backend auto
    soundstorm-bench duration_s=10 runs=2
    soundstorm-bench ar_baseline=true codec_decode=true
    soundstorm-bench model=tiny duration_s=1 output_json=/tmp/bench.json
    soundstorm-bench backend=cpu backend.options.num_threads=2 model.depth=2 sampler=greedy
    soundstorm-bench backend=cpu backend.options.dtype=int8   # int8 linear layers (or dtype=int8)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.io import atomic_write_bytes
from soundstorm.bench import format_table, run_bench


# the config groups of its closed schema (soundstorm.cli._hydra)
SECTIONS = ("model", "sampler", "backend")


@hydra_main("soundstorm-bench", "bench", lambda: cli_schema("bench", SECTIONS))
def main(cfg: DictConfig) -> None:
    try:
        bench_cfg = builders.build_bench_config(cfg)
        result = run_bench(bench_cfg)
    except ValueError as err:  # bad options name the field and value: no traceback
        print(f"soundstorm-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(result))
    if bench_cfg.output_json:
        path = Path(bench_cfg.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(result, indent=2, default=str).encode())
        print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()
