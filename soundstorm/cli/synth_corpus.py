"""`soundstorm-synth-corpus`: synthesise N English utterances with festival or espeak-ng into a folder.

Example: ``soundstorm-synth-corpus --out corpus --num-utterances 1200 --engine festival --heldout-fraction 0.05``
writes ``corpus/wavs/utt00000.wav ...`` and ``corpus/manifest.jsonl`` (path, text, speaker, split,
duration; festival also phones).
"""

from __future__ import annotations

import argparse
import os
import sys

from soundstorm.synthesis.corpus import ENGINES, synth_corpus


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, as ``taskset`` sets it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="soundstorm-synth-corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--num-utterances", type=int, default=20, help="how many utterances (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sentence, voice, pitch and speed choices")
    parser.add_argument("--engine", choices=ENGINES, default="espeak",
                        help="festival: six readable speakers with phone alignments; espeak: many robotic voices")
    parser.add_argument("--heldout-fraction", type=float, default=0.0,
                        help="fraction of the sentences whose every utterance is marked split=heldout (default 0)")
    parser.add_argument("--sentences-per-utterance", type=int, default=1,
                        help="sentences joined in each training utterance (held-out ones are always alone)")
    parser.add_argument("--speakers", default="diphone",
                        help="festival: 'diphone' (default: variants of two diphone voices; tokens do not tell them "
                             "apart), 'mixed' (four diphone, two slt HTS variants; read better; use with --timing slt) or "
                             "comma-separated names (soundstorm.synthesis.festival.SPEAKERS)")
    parser.add_argument("--timing", default="own",
                        help="festival: 'own' (default: each voice its own phone durations) or 'slt' (the diphone "
                             "speakers take the slt HTS voice's durations and unreduced vowels, so phone timing does "
                             "not tell the voices apart)")
    parser.add_argument("--workers", type=int, default=None,
                        help="festival: batches of 100 utterances synthesised at once (default: the cores this "
                             "process may use); the corpus is the same for any value")
    args = parser.parse_args(argv)
    workers = usable_cores() if args.workers is None else args.workers
    try:
        manifest = synth_corpus(args.out, args.num_utterances, args.seed, engine=args.engine,
                                heldout_fraction=args.heldout_fraction,
                                sentences_per_utterance=args.sentences_per_utterance, speakers=args.speakers,
                                timing=args.timing, workers=workers)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"soundstorm-synth-corpus: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    print(f"wrote {args.num_utterances} utterances; manifest: {manifest}")


if __name__ == "__main__":
    main()
