"""Dialogue scripts: a string (or file) of turns → ``[(speaker, text), ...]``.

Turns are separated by ``|`` or by line breaks. A turn may start with a speaker label (``A: ...``,
``Bob: ...``); a turn without one goes to the speaker after the previous turn's, in the order the
voices were given, so an unlabelled script alternates between two speakers starting with the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_\-]{0,31})\s*:\s*(.*)$", re.S)


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


def read_script(script: str | Path) -> str:
    """The script's text: a ``Path`` (or ``@file`` string) is read from disk, any other string is the script."""
    if isinstance(script, str) and script.startswith("@"):
        script = Path(script[1:])
    if isinstance(script, Path):
        if not script.is_file():
            raise FileNotFoundError(f"script file not found: {script}")
        return script.read_text(encoding="utf-8")
    if not isinstance(script, str):
        raise ValueError(f"script must be a string or a pathlib.Path, got {type(script).__name__}")
    return script


def parse_script(script: str | Path, speakers: Sequence[str]) -> list[Turn]:
    """Turns of ``script`` spoken by ``speakers`` (the voices' names, in order; labels must be among them)."""
    speakers = list(speakers)
    if not speakers or len(set(speakers)) != len(speakers):
        raise ValueError(f"speakers must be a non-empty list of distinct names, got {speakers}")
    text = read_script(script)
    pieces = [p.strip() for p in re.split(r"\||\n", text)]
    pieces = [p for p in pieces if p and not p.startswith("#")]
    if not pieces:
        raise ValueError(f"script has no turns: {text!r}; separate turns with '|' or new lines, e.g. "
                         f"'Hello there. | Hi, how are you?' or 'A: Hello there.\\nB: Hi.'")
    turns, previous = [], None
    for number, piece in enumerate(pieces, 1):
        match = _LABEL.match(piece)
        if match and match.group(1) in speakers:
            speaker, words = match.group(1), match.group(2).strip()
        elif match and len(match.group(1)) <= 2 and " " not in piece.split(":")[0]:
            raise ValueError(f"script turn {number} is labelled {match.group(1)!r}, but the voices are {speakers}; "
                             f"label turns with one of them or leave the label out")
        else:
            speaker = speakers[0] if previous is None else speakers[(speakers.index(previous) + 1) % len(speakers)]
            words = piece
        if not re.search(r"[A-Za-z0-9]", words):
            raise ValueError(f"script turn {number} ({piece!r}) has no words to speak")
        turns.append(Turn(speaker, words))
        previous = speaker
    return turns
