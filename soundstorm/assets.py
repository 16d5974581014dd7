"""Which codec and semantic tokenizer a model belongs with, and the checks that refuse a mismatch.

``soundstorm-prepare`` fits (or loads) a codec and a tokenizer and saves them under ``<tokens>/codec``
and ``<tokens>/semantic``; their settings and a sha256 *fingerprint* of each saved folder
(``config.json`` + ``weights.safetensors``) are recorded in the token manifest. Training copies that
record into every checkpoint's ``config.json`` (key ``tokens``). Training, evaluation and generation
take the codec and tokenizer from the folder they are given, never from settings typed again, and
compare folder, manifest and checkpoint (settings and fingerprints) before any work, so that tokens
are never decoded with a codec the model never saw.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from soundstorm.io import component_fingerprint
from soundstorm.codecs import load_codec
from soundstorm.data.manifest import MANIFEST_NAME, TokenManifest
from soundstorm.model import SoundStorm
from soundstorm.semantic import load_tokenizer, upsample_ratio

COMPONENTS = ("codec", "semantic")
RECORD_KEY = "tokens"  # where a checkpoint's config.json keeps the record
DESCRIBE_ALIASES = {"bandwidth": "bandwidth_kbps"}  # setting name → describe() key, where they differ


@dataclass
class Assets:
    """A fitted codec and tokenizer loaded from a folder, and the record that identifies them."""

    folder: Path
    codec: object
    tokenizer: object
    record: dict  # {"codec": describe(), "semantic": describe(), "semantic_upsample", "fingerprints"}


def load_assets(folder, field: str) -> Assets:
    """The codec and tokenizer saved in ``folder`` (config field ``field``), checked against the
    folder's token manifest when it has one (a replaced ``codec/`` or ``semantic/`` is refused)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{field}={str(folder)!r}: folder not found; expected a token folder written by "
                                "soundstorm-prepare (with codec/ and semantic/)")
    for kind in COMPONENTS:
        if not (folder / kind / "config.json").is_file():
            raise FileNotFoundError(f"{field}={str(folder)!r} has no {kind}/config.json; expected a token folder "
                                    "written by soundstorm-prepare (with codec/ and semantic/)")
    fingerprints = {kind: component_fingerprint(folder / kind) for kind in COMPONENTS}
    codec, tokenizer = load_codec(folder / "codec"), load_tokenizer(folder / "semantic")
    record = {"codec": codec.describe(), "semantic": tokenizer.describe(),
              "semantic_upsample": upsample_ratio(codec.frame_rate, tokenizer.frame_rate), "fingerprints": fingerprints}
    if (folder / MANIFEST_NAME).is_file():
        manifest = TokenManifest.load(folder)
        for kind in COMPONENTS:
            recorded = getattr(manifest, kind)
            if _json(recorded) != _json(record[kind]):
                raise ValueError(f"{folder}/{kind} holds {record[kind]}, but {folder}/{MANIFEST_NAME} records "
                                 f"{recorded}: the fitted {kind} was replaced after the tokens were made; re-run "
                                 "soundstorm-prepare into a fresh folder")
            if kind in manifest.fingerprints and manifest.fingerprints[kind] != fingerprints[kind]:
                raise ValueError(f"{folder}/{kind} has sha256 {fingerprints[kind][:12]}…, but {folder}/{MANIFEST_NAME} "
                                 f"records {manifest.fingerprints[kind][:12]}…: the fitted {kind} was replaced after "
                                 "the tokens were made; re-run soundstorm-prepare into a fresh folder")
    return Assets(folder, codec, tokenizer, record)


def check_configured(kind: str, settings: dict, pretrained_dir, assets: Assets, field: str) -> None:
    """A ``codec`` / ``semantic`` section given next to a folder must describe what the folder holds."""
    saved = (assets.codec if kind == "codec" else assets.tokenizer).describe()
    where = f"the {kind} saved in {field}={str(assets.folder)!r}"
    if settings["name"] != saved["name"]:
        raise ValueError(f"{kind}={settings['name']} does not match {where} ({saved}); leave {kind} unset to use "
                         "the saved one")
    if pretrained_dir is not None:
        raise ValueError(f"{kind}.pretrained_dir={pretrained_dir!r} is not used here: the {kind} comes from "
                         f"{field}={str(assets.folder)!r}; leave it unset")
    for name, value in settings.items():
        key = DESCRIBE_ALIASES.get(name, name)
        if key in saved and value != saved[key]:
            raise ValueError(f"{kind}.{name}={value!r} does not match {where} ({key}={saved[key]!r}); leave {kind} "
                             "unset to use the saved settings")


def _json(value) -> str:
    """A canonical form for comparing records (tuples and lists, ints and floats read back alike)."""
    return json.dumps(json.loads(json.dumps(value)), sort_keys=True)


def read_record(checkpoint) -> dict | None:
    """The token record in a checkpoint's ``config.json`` (None when it has none, e.g. an older one)."""
    path = Path(checkpoint) / "config.json"
    try:
        return json.loads(path.read_text()).get(RECORD_KEY)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def check_sizes(model_config, assets: Assets, field: str, checkpoint, checkpoint_field: str = "checkpoint") -> None:
    """The model's data-facing sizes must be those of the folder's codec and tokenizer."""
    pairs = (("num_levels", assets.codec.num_levels, model_config.num_levels),
             ("codebook_size", assets.codec.codebook_size, model_config.codebook_size),
             ("semantic_vocab_size", assets.tokenizer.vocab_size, model_config.semantic_vocab_size),
             ("semantic_upsample", assets.record["semantic_upsample"], model_config.semantic_upsample))
    for name, have, expected in pairs:
        if have != expected:
            raise ValueError(f"{field}={str(assets.folder)!r} holds a codec/tokenizer with {name}={have}, but "
                             f"{checkpoint_field}={str(checkpoint)!r} was trained with {name}={expected}; pass the token "
                             "folder the checkpoint was trained on")


def check_record(record: dict | None, assets: Assets, field: str, checkpoint, kinds=COMPONENTS,
                 checkpoint_field: str = "checkpoint") -> None:
    """Refuse ``assets`` unless their ``kinds`` (codec, semantic) have the settings and fitted codebooks
    (sha256 fingerprints) recorded in a checkpoint (``record``: :func:`read_record`); an older checkpoint
    without a record is let through with a warning."""
    if record is None:
        warnings.warn(f"{checkpoint_field}={str(checkpoint)!r} records no token fingerprint (an older checkpoint or a "
                      f"save_pretrained export); only the sizes of {field}={str(assets.folder)!r} were checked",
                      stacklevel=3)
        return
    for kind in kinds:
        if _json(record[kind]) != _json(assets.record[kind]):
            keys = sorted(k for k in set(record[kind]) | set(assets.record[kind])
                          if record[kind].get(k) != assets.record[kind].get(k))
            raise ValueError(f"{field}={str(assets.folder)!r} holds a {kind} that differs from the one "
                             f"{checkpoint_field}={str(checkpoint)!r} was trained with: "
                             + ", ".join(f"{kind}.{k}={assets.record[kind].get(k)!r} (checkpoint: "
                                         f"{record[kind].get(k)!r})" for k in keys)
                             + "; pass the token folder the checkpoint was trained on")
        have, expected = assets.record["fingerprints"][kind], record["fingerprints"][kind]
        if have != expected:
            raise ValueError(f"{field}={str(assets.folder)!r} holds a {kind} with the same settings but other fitted "
                             f"codebooks than {checkpoint_field}={str(checkpoint)!r} was trained with (sha256 {have[:12]}…, "
                             f"expected {expected[:12]}…; another soundstorm-prepare run?); pass the token folder the "
                             "checkpoint was trained on")


def check_pairing(record: dict | None, model_config, assets: Assets, field: str, checkpoint,
                  checkpoint_field: str = "checkpoint") -> None:
    """Refuse ``assets`` unless they are the codec and tokenizer the checkpoint was trained with:
    same sizes, same settings and the same fitted codebooks (fingerprints)."""
    check_sizes(model_config, assets, field, checkpoint, checkpoint_field)
    check_record(record, assets, field, checkpoint, checkpoint_field=checkpoint_field)


def record_from_manifest(manifest: TokenManifest) -> dict | None:
    """The record a checkpoint keeps of the token folder it was trained on, from the folder's manifest
    (what :func:`load_assets` checks the folder against), without loading the codec or the tokenizer;
    None for a manifest that records no fingerprints (an older one)."""
    if not all(kind in manifest.fingerprints for kind in COMPONENTS):
        return None
    return {"codec": manifest.codec, "semantic": manifest.semantic, "semantic_upsample": manifest.semantic_upsample,
            "fingerprints": {kind: manifest.fingerprints[kind] for kind in COMPONENTS}}


def require_checkpoint_dir(checkpoint, field: str = "checkpoint") -> Path:
    """``checkpoint`` as a Path, refused (naming ``field``) unless it is a directory: the CLIs call this first,
    so a mistyped checkpoint is reported before the token folder is read."""
    if checkpoint is None or not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"{field}={str(checkpoint)!r}: directory not found; expected a SoundStorm checkpoint "
                                "(a step_XXXXXXXX folder written by soundstorm-train, or a save_pretrained folder)")
    return Path(checkpoint)


def open_checkpoint(checkpoint, assets: Assets, *, field: str = "checkpoint", assets_field: str = "assets",
                    use_ema: bool = True, device="cpu", ema_field: str = "use_ema") -> tuple[SoundStorm, bool]:
    """``(model, used_ema)``: the one way a consumer (``soundstorm-generate``, ``-eval``, ``-dialogue``,
    :meth:`DialoguePipeline.from_pretrained <soundstorm.dialogue.DialoguePipeline.from_pretrained>`)
    loads a SoundStorm checkpoint together with the token folder it will decode with.

    Every check runs here, before any generation: the directory must be a SoundStorm checkpoint (a
    text-to-semantic one is named as such), its ``config.json`` must fit its weights (the field and both
    shapes named), the weights it uses must be finite, an EMA file its ``meta.json`` lists must be there
    (with ``use_ema``), and ``assets`` must hold the codec and tokenizer it was trained with: the same
    sizes, settings and fitted codebooks (:func:`check_pairing`, by fingerprint)."""
    require_checkpoint_dir(checkpoint, field)
    model, used_ema = SoundStorm.from_checkpoint(checkpoint, use_ema, device, ema_field=ema_field)
    check_pairing(read_record(checkpoint), model.config, assets, assets_field, checkpoint, field)
    return model, used_ema
