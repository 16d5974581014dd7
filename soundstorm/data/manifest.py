"""The token manifest: what a prepared token folder holds and which settings produced it.

``manifest.json`` records the codec (name, sample rate, frame rate, Q, codebook size, bandwidth),
the semantic tokenizer (name, rate, vocabulary), the sha256 fingerprints of the fitted ``codec/`` and
``semantic/`` folders, the upsample ratio, the shard format, every stored utterance (id, shard,
lengths, duration, text, speaker id, train/held-out split, source path) and the skipped inputs.
Source paths are written relative to the token folder (``../corpus/wavs/x.wav``) and resolved against
it by :meth:`TokenManifest.load`, so a corpus and its token folder can be moved or copied together;
absolute paths (token folders written before, or audio on another drive) are kept as they are.
:meth:`TokenManifest.check_compatible` compares it with a ``SoundStormConfig`` before training.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from soundstorm.io import atomic_write_bytes
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
            if isinstance(utt, dict) and utt.get("path"):
                # a relative path is relative to the token folder (lexically normalised: tokens/../corpus → corpus)
                utt["path"] = os.path.normpath(path.parent / utt["path"])
        return cls(**data)


def relative_source_path(audio_path, token_folder) -> str:
    """``audio_path`` as the manifest stores it: relative to ``token_folder`` (absolute where no relative
    path exists, e.g. another drive)."""
    try:
        return os.path.relpath(os.path.abspath(audio_path), os.path.abspath(token_folder))
    except ValueError:
        return os.path.abspath(audio_path)
