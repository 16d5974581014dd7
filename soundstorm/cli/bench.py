"""`soundstorm-bench`: Hydra front end of :mod:`soundstorm.bench` (config ``configs/bench.yaml``).

Examples::

    soundstorm-bench                                   # paper preset, 30 s, batch 1, backend auto
    soundstorm-bench duration_s=10 runs=2
    soundstorm-bench ar_baseline=true codec_decode=true
    soundstorm-bench model=tiny duration_s=1 output_json=/tmp/bench.json
    soundstorm-bench backend=cpu backend.options.num_threads=2 model.depth=2 sampler=greedy
    soundstorm-bench backend=cpu backend.options.dtype=int8   # int8 linear layers (or dtype=int8)

``output_json`` follows :mod:`soundstorm.outputs`: one writer at a time (a lock beside the file), an
existing file refused before the benchmark runs unless ``overwrite=true``. Exit 2 on bad options or a file
in use, 1 on an operating-system error while writing (the table printed above is complete).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.io import atomic_write_bytes
from soundstorm.bench import format_table, run_bench
from soundstorm.outputs import WriteFailed, claim


# the config groups of its closed schema (soundstorm.cli._hydra)
SECTIONS = ("model", "sampler", "backend")


@hydra_main("soundstorm-bench", "bench", lambda: cli_schema("bench", SECTIONS))
def main(cfg: DictConfig) -> None:
    try:
        bench_cfg = builders.build_bench_config(cfg)
        path = Path(bench_cfg.output_json) if bench_cfg.output_json else None
        held = contextlib.nullcontext() if path is None else claim(
            path.parent, "output_json", "soundstorm-bench", outputs=[path.name], overwrite=cfg.get("overwrite", False),
            lock_name=f".{path.name}.soundstorm.lock", shown=f"the folder of output_json={str(path)!r}",
            kept=f"The table printed above is complete; {path} was not written (it is written whole or not at all).",
            rerun="Fix the cause (free space), then rerun.")
        with held as out:
            result = run_bench(bench_cfg)
            print(format_table(result))
            if path is not None:
                out.commit()
                atomic_write_bytes(path, json.dumps(result, indent=2, default=str).encode())
                print(f"wrote {path.resolve()}")
    except ValueError as err:  # bad options name the field and value: no traceback
        print(f"soundstorm-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (WriteFailed, OSError) as err:
        print(f"soundstorm-bench: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
