"""Text front end of the text-to-semantic stage: a sentence → a sequence of symbol ids.

Two front ends share one fixed vocabulary (the printable ASCII characters, ids 1..95; 0 is unused):

* ``phonemes`` (default): espeak-ng's ASCII phoneme mnemonics (``espeak-ng -q -x``, Kirshenbaum
  style, stress marks included), one id per character. English spelling is far from its sound, and
  a corpus of a few hundred sentences cannot teach a model the spelling rules; espeak-ng knows them
  offline, for any sentence, and its output is plain ASCII so no vocabulary has to be stored.
* ``chars``: the lower-cased text itself (for languages or machines without espeak-ng).

A fixed vocabulary keeps checkpoints independent of the corpus they were trained on.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

FRONTENDS = ("phonemes", "chars")
VOCAB_SIZE = 96  # id = ord(c) - 31 for the printable ASCII characters ' '..'~'; 0 is never produced
_INSTALL_HINT = "install it with: sudo apt-get install espeak-ng, or use the 'chars' front end"


def check_frontend(frontend: str) -> str:
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend={frontend!r} is unknown; expected one of {list(FRONTENDS)}")
    return frontend


@functools.lru_cache(maxsize=4096)
def phonemize(text: str) -> str:
    """espeak-ng's ASCII phonemes of ``text`` (words separated by spaces, clauses by ' | ').

    ``text`` comes from data (a manifest, a shared dialogue script): it follows ``--``, the end of
    espeak-ng's options, so a text such as ``--phonout=FILE`` or ``-w FILE`` is spoken, never obeyed;
    the command is an argument list (no shell)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError(f"espeak-ng was not found on PATH (the 'phonemes' front end needs it); {_INSTALL_HINT}")
    result = subprocess.run([espeak, "-q", "-x", "-v", "en-us", "--", text], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise ValueError(f"espeak-ng could not phonemize {text!r}: {result.stderr.strip()}")
    clauses = [" ".join(line.split()) for line in result.stdout.splitlines() if line.strip()]
    return " | ".join(clauses)


def symbols(text: str, frontend: str = "phonemes") -> str:
    """The ASCII symbol string the model reads for ``text``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    if check_frontend(frontend) == "phonemes":
        return phonemize(text.strip())
    return re.sub(r"\s+", " ", text.strip().lower().encode("ascii", "ignore").decode())


def encode(text: str, frontend: str = "phonemes") -> list[int]:
    """Symbol ids (1..95) of ``text``; characters outside printable ASCII are dropped."""
    ids = [ord(c) - 31 for c in symbols(text, frontend) if 32 <= ord(c) <= 126]
    if not ids:
        raise ValueError(f"text {text!r} has no symbol the {frontend!r} front end can read")
    return ids
