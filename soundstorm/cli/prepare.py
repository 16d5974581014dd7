"""`soundstorm-prepare`: audio → codec codes + semantic ids in shards, with a manifest (Hydra).

Example: ``soundstorm-prepare input=corpus/manifest.jsonl output=tokens codec=melrvq
semantic=mfcc_kmeans codec.num_levels=8``. A rerun skips finished shards; bad files are listed.
The output folder follows :mod:`soundstorm.outputs`: one writer at a time (a second is refused, exit 2),
nothing created before the settings are checked; an operating-system error such as a full disk exits 1
with a message saying the finished shards are intact and that the rerun continues from them.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from soundstorm.builders import build_prepare
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.config_keys import dataclass_schema
from soundstorm.data.prepare import PrepareOptions, prepare
from soundstorm.outputs import WriteFailed, claim


@hydra_main("soundstorm-prepare", "prepare", lambda: cli_schema("prepare", ("codec", "semantic"),
                                                              **dataclass_schema(PrepareOptions)))
def main(cfg: DictConfig) -> None:
    try:
        options, codec, tokenizer = build_prepare(cfg)
        with claim(options.output, "output", "soundstorm-prepare",
                   kept=f"Every shard finished before it under {options.output} is complete (a shard's sidecar "
                        ".json is written last, and only after the shard), and so are the saved codec/ and semantic/.",
                   rerun="Fix the cause (free space), then rerun the same command: it skips the finished shards and "
                         "continues."):
            prepare(options, codec, tokenizer)  # a rerun continues an earlier run: nothing refused or removed
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"soundstorm-prepare: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (WriteFailed, OSError) as err:
        print(f"soundstorm-prepare: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
