"""`soundstorm-sweep-summary`: the table of a sweep's runs, from its folder.

Example: ``soundstorm-sweep-summary multirun/2024-01-31_12-00-00`` writes ``summary.md`` and
``summary.csv`` into that folder and prints the markdown (:mod:`soundstorm.train.sweep_summary`).
``soundstorm-train -m`` does this by itself when the sweep ends; this command is for a sweep whose
launching process died (a SLURM sweep's login shell, say) or that is still running. A sweep folder may
come from someone else: run folders recorded outside it are read only under ``--runs-root``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundstorm.train.sweep_summary import write_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="soundstorm-sweep-summary", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="the sweep folder (hydra.sweep.dir of a soundstorm-train -m run)")
    parser.add_argument("--runs-root", default=None,
                        help="also read the runs whose out_dir lies under this folder (e.g. '.' for a sweep whose "
                             "experiment sets out_dir=outputs/...); by default only those under the sweep folder")
    args = parser.parse_args(argv)
    if args.runs_root is not None and not Path(args.runs_root).is_dir():
        parser.error(f"--runs-root {args.runs_root!r} is not a folder")
    try:
        markdown = write_summary(args.sweep_dir, args.runs_root)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    except OSError as err:  # e.g. a read-only sweep folder
        print(f"soundstorm-sweep-summary: error: cannot write the summary into {args.sweep_dir}: {err}",
              file=sys.stderr)
        sys.exit(1)
    print(markdown, end="")


if __name__ == "__main__":
    main()
