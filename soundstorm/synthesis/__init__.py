"""Speech corpora synthesised offline, for tests and the CPU quickstart (an application, not the paper).

:mod:`.corpus` turns the bundled sentences into a corpus folder (wavs + a JSONL manifest with
transcripts, speaker ids and held-out splits) with espeak-ng or festival; :mod:`.festival` holds the
festival speakers and the phone alignments a content tokenizer learns from. The paper's core never
imports this package (``tests/test_imports.py`` checks the layers).
"""

from soundstorm.synthesis.corpus import ENGINES, synth_corpus

__all__ = ["ENGINES", "synth_corpus"]
