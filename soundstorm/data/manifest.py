"""The token manifest: what a prepared token folder holds and which settings produced it.

``manifest.json`` records the codec (name, sample rate, frame rate, Q, codebook size, bandwidth),
the semantic tokenizer (name, rate, vocabulary), the sha256 fingerprints of the fitted ``codec/`` and
``semantic/`` folders, the upsample ratio, the shard format, every stored utterance (id, shard,
lengths, duration, text, speaker id, train/held-out split, source path) and the skipped inputs.
Source paths are written relative to the token folder (``../corpus/wavs/x.wav``) and resolved against
it by :meth:`TokenManifest.load`, so a corpus and its token folder can be moved or copied together;
absolute paths (token folders written before, or audio on another drive) are kept as they are.
:meth:`TokenManifest.check_compatible` compares it with a ``SoundStormConfig`` before training.

A manifest is data from whoever shared the folder. :meth:`TokenManifest.load` refuses utterance ids and
shard names that are not plain file names (:func:`soundstorm.paths.check_name`), utterances longer than
:attr:`~soundstorm.limits.Limits.max_utterance_seconds` and byte ranges that are not numbers. Audio is
read only from the folder :meth:`TokenManifest.audio_root` allows (see there), through
:meth:`TokenManifest.audio_path`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from soundstorm import limits
from soundstorm.io import atomic_write_bytes
from soundstorm.paths import check_name, inside, is_under
from soundstorm.semantic.base import upsample_ratio

MANIFEST_NAME = "manifest.json"
FORMAT = "soundstorm-tokens/v1"
UTTERANCE_FIELDS = ("utt_id", "shard", "index", "num_frames", "num_semantic_frames", "duration", "text", "speaker",
                    "split", "path")
# Fields that token folders written before they existed may lack, with the value they then take.
OPTIONAL_UTTERANCE_FIELDS = {"speaker": "", "split": ""}


@dataclass
class TokenManifest:
    codec: dict
    semantic: dict
    semantic_upsample: int
    shard_format: str = "safetensors"
    utterances: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    source: str = ""
    fingerprints: dict = field(default_factory=dict)  # sha256 of codec/ and semantic/ (soundstorm.assets)
    audio_folder: str = ""  # where prepare read the source audio, relative to the token folder ("": unknown)
    format: str = FORMAT

    def __post_init__(self):
        for key in ("name", "sample_rate", "frame_rate", "num_levels", "codebook_size"):
            if key not in self.codec:
                raise ValueError(f"manifest codec settings lack {key!r}: {self.codec}")
        for key in ("name", "frame_rate", "vocab_size"):
            if key not in self.semantic:
                raise ValueError(f"manifest semantic settings lack {key!r}: {self.semantic}")
        expected = upsample_ratio(self.codec["frame_rate"], self.semantic["frame_rate"])
        if self.semantic_upsample != expected:
            raise ValueError(f"manifest semantic_upsample={self.semantic_upsample} but the codec rate "
                             f"{self.codec['frame_rate']} Hz / semantic rate {self.semantic['frame_rate']} Hz = {expected}")
        if self.shard_format not in ("safetensors", "npz"):
            raise ValueError(f"manifest shard_format={self.shard_format!r}, expected 'safetensors' or 'npz'")
        for utt in self.utterances:
            for key, default in OPTIONAL_UTTERANCE_FIELDS.items():
                utt.setdefault(key, default)
            missing = [k for k in UTTERANCE_FIELDS if k not in utt]
            if missing:
                raise ValueError(f"manifest utterance {utt.get('utt_id')!r} lacks fields {missing}")
            if utt["num_frames"] != utt["num_semantic_frames"] * self.semantic_upsample:
                raise ValueError(f"manifest utterance {utt['utt_id']!r}: num_frames={utt['num_frames']} != "
                                 f"num_semantic_frames={utt['num_semantic_frames']} × {self.semantic_upsample}")
            self._check_utterance(utt)

    def _check_utterance(self, utt: dict) -> None:
        """Names that become paths, and sizes that become allocations, checked before either is used."""
        where = f"manifest utterance {str(utt.get('utt_id'))[:80]!r}"
        check_name(utt["utt_id"], f"{where}: utt_id")
        check_name(utt["shard"], f"{where}: shard")
        for key in ("num_frames", "num_semantic_frames", "index"):
            if isinstance(utt[key], bool) or not isinstance(utt[key], int) or utt[key] < 0:
                raise ValueError(f"{where}: {key}={utt[key]!r}, expected a non-negative integer")
        limits.check_at_most(utt["num_frames"] / self.frame_rate, "max_utterance_seconds",
                             f"{where}: num_frames / frame rate (seconds)")
        for kind, entry in (utt.get("tensors") or {}).items():
            if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                        and v >= 0 for v in entry[:2])
                    and isinstance(entry[2], str)):
                raise ValueError(f"{where}: tensors.{kind}={str(entry)[:80]}, expected [begin, end, dtype]")

    @property
    def num_levels(self) -> int:
        return int(self.codec["num_levels"])

    @property
    def frame_rate(self) -> float:
        return float(self.codec["frame_rate"])

    @property
    def semantic_frame_rate(self) -> float:
        return float(self.semantic["frame_rate"])

    def check_compatible(self, model_config) -> None:
        """Raise ``ValueError`` naming the field, the manifest value and the model value on a mismatch."""
        pairs = (("num_levels", self.codec["num_levels"], model_config.num_levels),
                 ("codebook_size", self.codec["codebook_size"], model_config.codebook_size),
                 ("semantic_vocab_size", self.semantic["vocab_size"], model_config.semantic_vocab_size),
                 ("semantic_upsample", self.semantic_upsample, model_config.semantic_upsample))
        for name, manifest_value, model_value in pairs:
            if manifest_value != model_value:
                raise ValueError(f"token manifest and model disagree on {name}: manifest has {manifest_value} "
                                 f"(codec {self.codec['name']}, semantic {self.semantic['name']}), model config has "
                                 f"{model_value}; re-prepare the data or change the model config")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, root) -> Path:
        path = Path(root) / MANIFEST_NAME
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False).encode())
        return path

    @classmethod
    def load(cls, root) -> "TokenManifest":
        """Read ``root/manifest.json`` (``root`` may also be the file itself)."""
        path = Path(root)
        path = path / MANIFEST_NAME if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"token manifest not found: {path}; run soundstorm-prepare first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} has format {data.get('format') if isinstance(data, dict) else None!r}, "
                             f"expected {FORMAT!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path} has unknown fields {unknown}")
        for utt in data.get("utterances", []):
            if isinstance(utt, dict) and isinstance(utt.get("path"), str) and utt["path"]:
                # a relative path is relative to the token folder; kept absolute (lexically normalised:
                # tokens/../corpus → corpus), so that audio_path() checks the very file it returns also when
                # the token folder was named relative to the working directory (data.root=outputs/x/tokens)
                utt["path"] = os.path.abspath(path.parent / utt["path"])
        try:
            manifest = cls(**data)
        except (TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"{path} is not a valid token manifest ({err})") from err
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        manifest.folder = path.parent
        return manifest

    folder = None  # the token folder, set by load(); not annotated, so not a field and never saved

    def audio_root(self, user_root=None) -> Path:
        """The one folder this manifest's audio paths may point into.

        ``user_root`` (``data.audio_root``), when given, is the user's own choice and wins. Otherwise the
        manifest's recorded ``audio_folder`` (where ``soundstorm-prepare`` read the audio), but only if it
        lies inside the folder that holds the token folder (the place the user put it): a shared token
        folder cannot widen that by recording ``/`` as its root. Manifests written before the field use
        the folder that holds the token folder itself.
        """
        if user_root not in (None, ""):
            if not Path(user_root).is_dir():
                raise FileNotFoundError(f"data.audio_root={str(user_root)!r}: folder not found")
            return Path(user_root)
        if self.folder is None:
            raise ValueError("this manifest was not read from a token folder (TokenManifest.load); pass the audio "
                             "folder as data.audio_root")
        parent = Path(os.path.abspath(self.folder)).parent
        if not self.audio_folder:
            return parent
        recorded = os.path.normpath(Path(self.folder) / self.audio_folder)
        if not is_under(recorded, parent):
            raise ValueError(f"{Path(self.folder) / MANIFEST_NAME}: audio_folder={self.audio_folder!r} lies outside "
                             f"{str(parent)!r}, the folder that holds the token folder; a shared manifest may not "
                             "name audio elsewhere: pass data.audio_root=FOLDER to allow the corpus folder you trust")
        return Path(recorded)

    def audio_path(self, utt: dict, user_root=None) -> Path:
        """The source audio of ``utt`` (a manifest utterance), refused unless it lies under :meth:`audio_root`."""
        root = self.audio_root(user_root)
        where = f"{Path(self.folder) / MANIFEST_NAME if self.folder else 'manifest'}: utterance {utt.get('utt_id')!r}"
        if not isinstance(utt.get("path"), str) or not utt["path"]:
            raise ValueError(f"{where} has no source audio path")
        return inside(root, utt["path"], f"{where}: path", "the audio folder (data.audio_root to choose another)")


def relative_source_path(audio_path, token_folder) -> str:
    """``audio_path`` as the manifest stores it: relative to ``token_folder`` (absolute where no relative
    path exists, e.g. another drive)."""
    try:
        return os.path.relpath(os.path.abspath(audio_path), os.path.abspath(token_folder))
    except ValueError:
        return os.path.abspath(audio_path)
