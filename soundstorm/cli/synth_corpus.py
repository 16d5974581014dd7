"""`soundstorm-synth-corpus`: synthesise N English utterances with espeak-ng into a folder.

Example: ``soundstorm-synth-corpus --out corpus --num-utterances 20 --seed 0`` writes
``corpus/wavs/utt00000.wav ...`` and ``corpus/manifest.jsonl`` (path, text, voice, duration).
"""

from __future__ import annotations

import argparse
import sys

from soundstorm.corpus import synth_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="soundstorm-synth-corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--num-utterances", type=int, default=20, help="how many utterances (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sentence, voice, pitch and speed choices")
    args = parser.parse_args(argv)
    try:
        manifest = synth_corpus(args.out, args.num_utterances, args.seed)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"soundstorm-synth-corpus: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    print(f"wrote {args.num_utterances} utterances; manifest: {manifest}")


if __name__ == "__main__":
    main()
