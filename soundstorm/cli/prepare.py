"""`soundstorm-prepare`: audio → codec codes + semantic ids in shards, with a manifest (Hydra).

Example: ``soundstorm-prepare input=corpus/manifest.jsonl output=tokens codec=melrvq
semantic=mfcc_kmeans codec.num_levels=8``. A rerun skips finished shards; bad files are listed.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from soundstorm.builders import build_prepare
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.config_keys import dataclass_schema
from soundstorm.data.prepare import PrepareOptions, prepare


@hydra_main("soundstorm-prepare", "prepare", lambda: cli_schema("prepare", ("codec", "semantic"),
                                                              **dataclass_schema(PrepareOptions)))
def main(cfg: DictConfig) -> None:
    try:
        options, codec, tokenizer = build_prepare(cfg)
        prepare(options, codec, tokenizer)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"soundstorm-prepare: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
