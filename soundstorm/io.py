"""File I/O for everything soundstorm writes: atomic files, safetensors tensors, component directories.

One job: no reader ever sees a half-written file, and no weights are ever unpickled. Data shards,
manifests, the corpus, checkpoints, ``SoundStorm.save_pretrained`` and the CLIs write through
:func:`atomic_file`; tensors go through :func:`save_state_dict` / :func:`load_state_dict`
(safetensors only). Fitted codecs and semantic tokenizers are saved as small directories
``config.json`` + ``weights.safetensors`` (:func:`save_component` / :func:`load_component`), and
identified by a sha256 of those two files (:func:`component_fingerprint`). Files follow the umask;
a truncated file is a :class:`CorruptFileError`, not a hint about pickles. A safetensors header is
read and checked (:func:`read_safetensors_header`: its length against the file and
:mod:`soundstorm.limits`, every tensor's byte range against its shape) before any tensor is allocated.
Audio and figures are written through the same temporary-name-and-rename path (:func:`atomic_write_wav`,
:func:`atomic_save_figure`), so a link planted at an output name is replaced, never followed.
This module imports only :mod:`soundstorm.limits` from soundstorm, so any module may use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from soundstorm import limits

COMPONENT_CONFIG_NAME = "config.json"
COMPONENT_WEIGHTS_NAME = "weights.safetensors"
FINGERPRINT_FILES = (COMPONENT_CONFIG_NAME, COMPONENT_WEIGHTS_NAME)


class CorruptFileError(ValueError):
    """A file that exists but cannot be read whole (truncated by a full disk, a killed copy, ...)."""


class NonFiniteWeightsError(ValueError):
    """Weights that hold a NaN or an infinity (a diverged run's): never generated from, never trained on."""


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere a set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    A crash or an exception at any point leaves ``path`` as it was (old content or absent) and
    removes the temporary file, so a reader never sees a half-written file. The file gets the
    permissions of a plain ``open()`` (0666 less the umask), not ``mkstemp``'s 0600. The temporary
    name is new and unpredictable (``mkstemp``), so no link planted beside ``path`` is followed, and the
    rename replaces a link at ``path`` itself. ``suffix``: for tools that pick a format by extension.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp (and safetensors' writer) make 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_wav(path: Path, wav_N: torch.Tensor, sample_rate: int) -> Path:
    """Write a mono waveform ``[N]`` (clamped to [-1, 1]) as a 16-bit PCM WAV file, atomically. Encoded in
    memory first: libsndfile reports a full disk only as "System error.", a plain write says ``ENOSPC``."""
    import soundfile as sf

    path = Path(path)
    buffer = io.BytesIO()
    sf.write(buffer, wav_N.detach().float().cpu().clamp(-1, 1).numpy(), int(sample_rate), format="WAV",
             subtype="PCM_16")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def atomic_save_figure(fig, path: Path, dpi: int = 80) -> Path:
    """``fig.savefig`` into memory, then written atomically as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


# safetensors dtype name → bytes per element
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                        "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _refuse_pickle(path: Path, prefix: bytes) -> None:
    """Name a pickle (``torch.save``'s zip, or a bare pickle) for what it is: soundstorm never unpickles."""
    if prefix[:4] == b"PK\x03\x04" or (prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise ValueError(f"{path} is not a valid safetensors file but a pickle (torch.save); soundstorm never "
                         "unpickles weights. Convert a trusted checkpoint with safetensors.torch.save_file first.")


def read_safetensors_header(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """``{name: (dtype, shape, begin, end)}`` (absolute byte offsets) of a safetensors file, every entry
    checked: the header length is within the file and :attr:`~soundstorm.limits.Limits.max_header_bytes`,
    each tensor's bytes are ``prod(shape) × itemsize`` and lie inside the file. Nothing larger than the
    header is read, so a file that claims terabytes costs nothing. A bad file → :class:`CorruptFileError`."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CorruptFileError(f"{path} is truncated or corrupt ({size} bytes; a safetensors file starts with "
                                   "an 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            _refuse_pickle(path, prefix)
            raise CorruptFileError(f"{path} is truncated or corrupt: it claims a {header_len}-byte header but the "
                                   f"file has {size} bytes")
        limits.check_at_most(header_len, "max_header_bytes", f"{path}: safetensors header length")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            _refuse_pickle(path, prefix)
            raise CorruptFileError(f"{path} is truncated or corrupt: its safetensors header is not valid JSON "
                                   f"({err})") from err
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path} is truncated or corrupt: its safetensors header is not a JSON object")
    start, out = 8 + header_len, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
            valid = (dtype in SAFETENSORS_ITEMSIZE and all(isinstance(n, int) and n >= 0 for n in shape)
                     and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= size - start
                     and end - begin == math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype])
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise CorruptFileError(f"{path} is truncated or corrupt: tensor {name!r} has the header entry "
                                   f"{str(entry)[:200]} (dtype, shape and byte range must agree and lie inside the "
                                   f"{size}-byte file)")
        out[name] = (dtype, shape, start + begin, start + end)
    return out


def save_state_dict(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies; shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_state_dict(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing file or a non-safetensors file (e.g. a pickle) is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    read_safetensors_header(path)  # sizes checked (and pickles refused) before load_file allocates anything
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is truncated or corrupt ({path.stat().st_size} bytes; safetensors says: "
                               f"{err}); copy it again, or use another checkpoint") from err


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinity (one host read for all of them)."""
    names = [k for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(tensors[k]).all() for k in names]).tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def check_finite_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights read from ``path`` that hold a NaN or an infinity, naming the file and the tensors.

    Every loader of weights calls this (``read_model_dir``: a SoundStorm or text-to-semantic model;
    ``SoundStorm.from_checkpoint``: the EMA weights; :func:`soundstorm.train.checkpoint.load_checkpoint`:
    what a resumed run restores), so diverged weights are never generated from or trained on."""
    bad = nonfinite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"{path} holds NaN or inf in {len(bad)} tensors, e.g. {bad[:3]}; expected finite weights "
                         "(a diverged run? use an earlier checkpoint)")


# What each model directory format is, and where it is used: named when a directory of one kind is
# given where another is expected (a text-to-semantic checkpoint passed as a SoundStorm one, ...).
FORMAT_KINDS = {
    "soundstorm/": ("a SoundStorm checkpoint", "use it as checkpoint=... of soundstorm-generate or soundstorm-eval, "
                    "or soundstorm_checkpoint=... of soundstorm-dialogue"),
    "soundstorm-t2s/": ("a text-to-semantic checkpoint", "use it as t2s_checkpoint=... of soundstorm-dialogue "
                        "(or evaluation.speech.t2s_checkpoint=... of soundstorm-eval)"),
}


def format_kind(fmt) -> tuple[str, str] | None:
    """``(what it is, where to use it)`` for a model directory's ``format`` (None: not one of ours)."""
    if not isinstance(fmt, str):
        return None
    return next((kind for prefix, kind in FORMAT_KINDS.items() if fmt.startswith(prefix)), None)


def check_format(config_path: Path, found, expected: str, what: str, older: tuple[str, ...] = ()) -> None:
    """Refuse a model directory whose ``config.json`` has another ``format`` than ``expected`` (or one of
    ``older``); when it is another kind of model we know, say which and where it belongs."""
    if found == expected or found in older:
        return
    have, want = format_kind(found), format_kind(expected)
    if have is not None and want is not None and have != want:
        raise ValueError(f"{config_path.parent} is {have[0]} (format {found!r} in {config_path.name}), where "
                         f"{want[0]} (format {expected!r}) is expected; {have[1]}")
    raise ValueError(f"{config_path} has format {found!r}, expected {expected!r} ({what})")


def read_json(path: Path, what: str, max_bytes: int | None = None):
    """Parse the JSON file ``path``; missing → FileNotFoundError, invalid (or, with ``max_bytes``, larger
    than that: a small record from a shared folder) → ValueError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected {what}")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ValueError(f"{path} holds {path.stat().st_size:,} bytes; {what} is at most {max_bytes:,}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def save_model_dir(directory, fmt: str, config: dict, state_dict: dict[str, torch.Tensor],
                   config_name: str = "config.json", weights_name: str = "model.safetensors") -> None:
    """A model directory: ``config.json`` (``{"format": fmt, **config}``) and safetensors weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / config_name, json.dumps({"format": fmt, **config}, indent=2).encode())
    save_state_dict(state_dict, directory / weights_name, metadata={"format": fmt})


def check_weights_fit(expected: dict[str, tuple], weights_path: Path, config_path: Path | None = None,
                      config=None, shapes_of=None) -> None:
    """Refuse a weights file whose tensors are not exactly ``expected`` (``{name: shape}``), reading only its
    header. With ``config`` (a dataclass) the message names the config field the mismatch points at: with
    ``shapes_of`` (``config → {name: shape}``, e.g. :func:`module_shapes` of the model class) the field
    whose saved value, put back, makes every shape fit (``check dim=48: the weights were saved with dim=32``);
    else the fields whose value is a dimension the weights do not have."""
    header = read_safetensors_header(weights_path)
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    wrong = [(k, list(expected[k]), header[k][1]) for k in expected if k in header and list(expected[k]) != header[k][1]]
    if not (missing or unexpected or wrong):
        return
    where = f"{config_path} does not describe {weights_path}" if config_path else f"{weights_path} does not fit"
    if wrong:
        name, implied, found = wrong[0]
        detail = (f"tensor {name!r} is {found} in the weights but the config implies {implied}"
                  + (f" ({len(wrong) - 1} more differ)" if len(wrong) > 1 else ""))
        if config is not None:
            detail += _config_suspects(config, {k: v[1] for k, v in header.items()}, wrong, shapes_of)
    else:
        detail = f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
    raise ValueError(f"{where}: {detail}; expected the config.json saved with these weights")


def _config_suspects(config, saved_shapes: dict[str, list], wrong: list, shapes_of) -> str:
    """``"; check FIELD=VALUE..."`` for :func:`check_weights_fit`: which integer fields of ``config`` the
    mismatching shapes point at (``wrong``: ``(name, implied, found)``), "" when none does."""
    fields = [f.name for f in dataclasses.fields(config)
              if isinstance(getattr(config, f.name), int) and not isinstance(getattr(config, f.name), bool)]
    pairs = sorted({(a, b) for _, implied, found in wrong if len(implied) == len(found)
                    for a, b in zip(implied, found) if a != b})
    if shapes_of is not None:  # the one field whose saved value makes every tensor fit (a few meta builds)
        for field in fields:
            for configured, saved in pairs:
                if getattr(config, field) != configured:
                    continue
                try:
                    shapes = shapes_of(dataclasses.replace(config, **{field: saved}))
                except (TypeError, ValueError):
                    continue
                if {k: list(v) for k, v in shapes.items()} == saved_shapes:
                    return f"; check {field}={configured!r}: the weights were saved with {field}={saved!r}"
    suspects = [f"{field}={getattr(config, field)!r}" for field in fields
                if any(getattr(config, field) == configured for configured, _ in pairs)]
    return f"; check {', '.join(suspects)}" if suspects else ""


def module_shapes(build, config) -> dict[str, tuple]:
    """``{name: shape}`` of ``build(config)``'s state dict, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def read_model_dir(directory, fmt: str, config_cls, what: str, device="cpu", config_name: str = "config.json",
                   weights_name: str = "model.safetensors", ignore: tuple[str, ...] = (),
                   older_formats: dict[str, dict] | None = None, build=None, count_fields: tuple[str, ...] = ()):
    """``(config, state_dict)`` of a directory written by :func:`save_model_dir`, refused unless its format
    is ``fmt``, its config names every field of the dataclass ``config_cls`` (none is guessed) and every
    weight is finite. ``ignore``: config keys that are records, not fields. ``what`` names the directory.
    ``older_formats``: earlier formats still read, each with the values of the fields it predates.

    ``build`` (the model class): before any weight is read or any layer allocated, the config is checked
    against the weights' header: each of ``count_fields`` (layer counts, which cost time even on the meta
    device) may not exceed the number of tensors, and ``build(config)`` on the meta device must have
    exactly the weights' tensor names and shapes. A config that would allocate terabytes is refused in
    milliseconds."""

    directory = Path(directory)
    data = read_json(directory / config_name, what)  # a missing directory: FileNotFoundError naming the file
    for key in ignore:
        data.pop(key, None)
    found = data.pop("format", None)
    older_formats = older_formats or {}
    check_format(directory / config_name, found, fmt, what, tuple(older_formats))
    if found in older_formats:
        data = {**older_formats[found], **data}
    fields = [f.name for f in dataclasses.fields(config_cls)]
    missing = [name for name in fields if name not in data]
    if missing:
        raise ValueError(f"{directory / config_name} lacks {', '.join(missing)}; expected every {config_cls.__name__} "
                         f"field ({', '.join(fields)}), none is guessed")
    try:
        config = config_cls.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / config_name}: {err}") from err
    if build is not None:
        weights_path = directory / weights_name
        if not weights_path.is_file():
            raise FileNotFoundError(f"weights file not found: {weights_path}")
        num_tensors = len(read_safetensors_header(weights_path))
        for name in count_fields:
            if getattr(config, name) > num_tensors:
                raise ValueError(f"{directory / config_name}: {name}={getattr(config, name)!r} cannot describe "
                                 f"{weights_path}, which holds {num_tensors} tensors; expected the config.json saved "
                                 "with these weights")
        check_weights_fit(module_shapes(build, config), weights_path, directory / config_name, config,
                          shapes_of=lambda changed: module_shapes(build, changed))
    state = load_state_dict(directory / weights_name, device=device)
    check_finite_state(state, directory / weights_name)
    return config, state


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state)``, with a ValueError naming ``path`` when the keys do not match."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the config: missing {missing}, unexpected {unexpected}")


def save_component(directory, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` then ``config`` (the config last, so a directory with one is complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, directory / COMPONENT_WEIGHTS_NAME)
    atomic_write_bytes(directory / COMPONENT_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode())


def load_component(directory, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a directory written by :func:`save_component`; ``kind`` names what is expected."""
    directory = Path(directory)
    config_path = directory / COMPONENT_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{kind} directory {directory} has no {COMPONENT_CONFIG_NAME}; expected a directory "
                                f"written by save()")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{config_path} must hold a JSON object with a 'name' field, got {config!r:.200}")
    return config, load_state_dict(directory / COMPONENT_WEIGHTS_NAME)


def component_fingerprint(directory) -> str:
    """sha256 of a saved component folder (its ``config.json`` and ``weights.safetensors``)."""
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected a folder saved by soundstorm-prepare")
        digest.update(name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> float:
    """A cheap checksum of a module's weights (used to verify a seeded random initialisation)."""
    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum() for p in module.parameters()))


def check_fingerprint(module: torch.nn.Module, expected: float, what: str) -> None:
    got = weights_fingerprint(module)
    if abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
        raise ValueError(f"{what}: the seeded random weights re-created here have fingerprint {got:.6f}, "
                         f"the saved directory expects {expected:.6f} (a different torch version?); "
                         "the saved codebooks would not match these weights")


def check_output_dir(path, field: str) -> Path:
    """Create the output folder ``path`` (config field ``field``) and prove it writable, before any work:
    a path that is a file, or a folder that cannot be written, is a ``ValueError`` naming both."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}={str(path)!r} is a file; expected a folder (or a path that does not exist yet)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{field}={str(path)!r} cannot be written to ({err.strerror}: {err.filename}); expected a "
                         "folder this user can create files in") from err
    return path


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path, what: str):
    """The array in the ``.npy`` file ``path`` (``what`` names what it should hold), never unpickled: a
    missing file is a ``FileNotFoundError``; a file that is not a ``.npy`` array (text, a pickle, an
    ``.npz``), an object array or a truncated one is a ``ValueError`` naming the file and what it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {what} saved with numpy.save")
    with open(path, "rb") as f:
        prefix = f.read(len(NPY_MAGIC))
        if prefix != NPY_MAGIC:
            kind = "an .npz archive" if prefix[:4] == b"PK\x03\x04" else f"it starts with {prefix!r}"
            raise ValueError(f"{path}: not a NumPy .npy array ({kind}, not the .npy header {NPY_MAGIC!r}); "
                             f"expected {what} saved with numpy.save")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            dtype = read_header(f)[2] if read_header else None  # format 3.0: np.load reads it below
        except (ValueError, EOFError, OSError) as err:
            raise CorruptFileError(f"{path}: a .npy file whose header cannot be read ({err}); expected {what} "
                                   "saved with numpy.save") from err
    if dtype is not None and dtype.hasobject:
        raise ValueError(f"{path}: a .npy array of Python objects (dtype {dtype}), whose items are pickles and are "
                         f"never loaded; expected {what} (a numeric array)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise CorruptFileError(f"{path}: a truncated or corrupt .npy file ({err}); expected {what}") from err
