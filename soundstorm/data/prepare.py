"""Token preparation: audio files → codec codes + semantic ids in shards, with a manifest.

Reads a folder (wav/flac/ogg) or a JSONL manifest (``path``, optional ``text``/``utt_id``/``speaker``/
``split``/``phones``; a shared JSONL is data: its ``path`` must lie under its own folder, or under
``audio_root`` when the user names one, and its ``utt_id`` must be a plain file name,
:mod:`soundstorm.paths`), cuts recordings longer than ``segment.max_seconds`` into segments at silences
(:mod:`.segment`; each stored as its own utterance ``<utt_id>_segNNNN`` with its ``segment`` [begin,
end] seconds), fits (on items not marked ``split: heldout``; with ``phones`` for a tokenizer that
needs alignments) or loads the codec and tokenizer (saved under ``output/codec`` and ``output/semantic`` so the
same codec decodes later), encodes in batches, and writes ``shard-NNNNN`` files plus a sidecar JSON
per shard, each atomically; each utterance's entry records the byte ranges of its tensors
(``tensors``) so a reader fetches only those. A rerun skips shards whose sidecar exists. Bad files
are skipped and listed; lengths are aligned with :func:`soundstorm.semantic.align_lengths` (``T = S × upsample``).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from soundstorm.codecs import load_codec
from soundstorm.data.audio import BadAudio, display_path, list_folder, read_audio, resample
from soundstorm.data.manifest import TokenManifest, relative_source_path
from soundstorm.data.reader import tensor_ranges
from soundstorm.data.segment import SegmentConfig, segment_bounds
from soundstorm.data.shards import shard_path, write_shard
from soundstorm.io import atomic_write_bytes, component_fingerprint
from soundstorm.paths import check_name, inside
from soundstorm.semantic import align_lengths, load_tokenizer, upsample_ratio


@dataclass
class PrepareOptions:
    input: str
    output: str
    batch_size: int = 8
    shard_size: int = 256
    shard_format: str = "safetensors"
    fit_max_files: int = 200
    fit_seed: int = 0
    max_shards: int | None = None  # stop after writing this many new shards (None: all); rerun to go on
    progress: bool = True
    # the folder every audio path must lie under (None: the input folder, or the JSONL's folder)
    audio_root: str | None = None
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    # processes: with 2 or more, the tokenizer is fitted beside the codec and the shards are encoded side by
    # side, each process with the calling process's torch thread count. Every shard is computed from the saved
    # codec and tokenizer alone, so the files are the same for any number of workers (tests/test_corpus_prepare.py)
    # The workers are spawned: a script that passes workers > 1 calls prepare under `if __name__ == "__main__":`.
    workers: int = 1

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"prepare workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.segment, SegmentConfig):
            raise ValueError(f"prepare segment must be a SegmentConfig, got {type(self.segment).__name__}")
        for name in ("batch_size", "shard_size", "fit_max_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"prepare {name} must be >= 1, got {getattr(self, name)}")
        if self.shard_format not in ("safetensors", "npz"):
            raise ValueError(f"prepare shard_format={self.shard_format!r}, expected 'safetensors' or 'npz'")


def speaker_of(entry: dict) -> str:
    """The speaker id of a JSONL entry: its ``speaker`` field, else its ``voice`` (the espeak-ng corpus), else ""."""
    for key in ("speaker", "voice"):
        if entry.get(key) not in (None, ""):
            return str(entry[key])
    return ""


SPLITS = ("", "train", "heldout")


def corpus_fields(entry: dict, where: str) -> dict:
    """``split`` ("train"/"heldout"/"") and, when present, ``phones`` (alignments for fitting) of a JSONL entry."""
    split = str(entry.get("split", ""))
    if split not in SPLITS:
        raise ValueError(f"{where}: split={split!r}, expected one of {SPLITS[1:]} (or no field)")
    fields = {"split": split}
    if "phones" in entry:
        phones = entry["phones"]
        if not isinstance(phones, list) or not all(isinstance(p, list) and len(p) == 2 for p in phones):
            raise ValueError(f"{where}: phones must be [[phone, end_seconds], ...], got {str(phones)[:80]}")
        fields["phones"] = phones
    return fields


def input_audio_root(source, audio_root=None) -> Path:
    """The folder every input audio path must lie under: ``audio_root`` when given, else the input folder
    (or the JSONL manifest's folder)."""
    if audio_root not in (None, ""):
        if not Path(audio_root).is_dir():
            raise FileNotFoundError(f"audio_root={str(audio_root)!r}: folder not found")
        return Path(audio_root)
    source = Path(source)
    return source if source.is_dir() else source.parent


def manifest_lines(source: Path) -> list[str]:
    """The lines of a JSONL manifest, each decoded as UTF-8; a line that is not is a ``ValueError`` naming
    the manifest, the line and the byte (instead of a decoder error that names neither)."""
    lines = []
    for lineno, raw in enumerate(source.read_bytes().splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{source}:{lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column "
                             f"{err.start + 1}: {raw[max(0, err.start - 30):err.start + 10]!r}); save the manifest as "
                             "UTF-8 (and give a file whose name is not UTF-8 a UTF-8 name)") from err
    return lines


def check_utf8(item: dict, where: str) -> None:
    """Refuse an input whose path, id or text cannot be written as UTF-8 (a file name from another system,
    held by Python as surrogate escapes, or an escaped lone surrogate in a JSONL): the token manifest is
    UTF-8 JSON, and finding out after the codebooks were fitted would leave a half-written token folder."""
    for key in ("path", "utt_id", "text", "speaker"):
        try:
            str(item.get(key, "")).encode("utf-8")
        except UnicodeEncodeError as err:
            shown = display_path(item[key])
            what = "its file name" if key == "path" else f"its {key}"
            raise ValueError(f"{where}: {what} ({shown}) is not valid UTF-8, and the token manifest records it as "
                             "UTF-8 JSON; rename the file (or fix the entry) to UTF-8, e.g. with convmv") from err


def list_inputs(source, audio_root=None) -> list[dict]:
    """Items ``{utt_id, path, text, speaker}`` from a folder of audio or a JSONL manifest (paths relative to
    it); every path must lie under :func:`input_audio_root`, name an existing file and be UTF-8 (as every id
    and text), and every id must be a plain file name. All of it is checked before any work."""
    source = Path(source)
    if source.is_dir():
        items = list_folder(source)
    elif source.is_file():
        items = []
        for lineno, line in enumerate(manifest_lines(source), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                path = Path(entry["path"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{source}:{lineno}: expected a JSON object with a 'path' field ({err})") from err
            path = path if path.is_absolute() else source.parent / path
            items.append({"utt_id": str(entry.get("utt_id", path.stem)), "path": str(path),
                          "where": f"{source}:{lineno}", "listed": str(entry["path"]),
                          "text": str(entry.get("text", "")), "speaker": speaker_of(entry),
                          **corpus_fields(entry, f"{source}:{lineno}")})
    else:
        raise FileNotFoundError(f"prepare input not found: {source} (expected a folder of audio or a JSONL manifest)")
    if not items:
        raise ValueError(f"prepare input {source} lists no audio files (.wav, .flac, .ogg)")
    root = input_audio_root(source, audio_root)
    missing = []
    for item in items:
        where = item.pop("where", f"{source}: {display_path(item['path'])}")
        listed = item.pop("listed", None)
        check_utf8(item, where)
        check_name(item["utt_id"], f"{where}: utt_id")
        # absolute before the check: inside() reads a relative path as relative to the root, but this one is
        # relative to the working directory (input=corpus/m.jsonl), and the file checked must be the file read
        item["path"] = os.path.abspath(item["path"])
        inside(root, item["path"], f"{where}: path", "the audio root (audio_root=FOLDER allows another)")
        if not Path(item["path"]).is_file():
            missing.append((where, listed, item["path"]))
    if missing:
        where, listed, path = missing[0]
        more = f" (and {len(missing) - 1} more of the {len(items)} listed files)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{where}: path {listed!r} not found: no file at {path}{more}; a relative path is "
                                f"read from the manifest's folder {source.parent}")
    ids = [item["utt_id"] for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"prepare input {source} has duplicate utt_ids, e.g. "
                         f"{sorted({i for i in ids if ids.count(i) > 1})[:3]}")
    return items


def _fit_wavs(items: list[dict], sample_rate: int, options: PrepareOptions,
              min_seconds: float) -> tuple[list[torch.Tensor], list]:
    """Waveforms (and their ``phones``, or None) of a seeded sample of the non-held-out items."""
    items = [item for item in items if item.get("split") != "heldout"]
    rng = np.random.default_rng(options.fit_seed)
    chosen = sorted(rng.permutation(len(items))[: options.fit_max_files].tolist())
    wavs, alignments, reasons = [], [], []
    for i in chosen:
        try:
            wav_N, rate = read_audio(items[i]["path"], min_seconds)
        except BadAudio as err:
            reasons.append(f"{items[i]['path']}: {err}")
            continue
        wavs.append(resample(wav_N, rate, sample_rate))
        alignments.append(items[i].get("phones"))
    if not wavs:
        raise ValueError(f"input={options.input}: none of the {len(chosen)} audio files sampled to fit the codebooks "
                         f"is usable{', e.g. ' + reasons[0] if reasons else ' (none is in the training split)'}; "
                         "expected readable, non-silent audio")
    return wavs, alignments


def resolve_component(component, directory: Path, loader, items, options, min_seconds, kind: str):
    """The codec/tokenizer to use, saved in ``directory`` so the tokens can be decoded later.

    An unfitted component reuses what an earlier run fitted and saved there (same settings), or is
    fitted on a sample of the inputs and saved. A fitted one (pretrained or loaded) is saved there,
    or must match what is already there byte for byte.
    """
    saved_here = (directory / "config.json").is_file()
    if getattr(component, "is_fitted", True):
        if not saved_here:
            component.save(directory)
        else:
            with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
                component.save(tmp)
                if _sha1(Path(tmp) / "weights.safetensors") != _sha1(directory / "weights.safetensors") or \
                        loader(directory).describe() != component.describe():
                    raise ValueError(f"{directory} holds a different {kind} than the one configured now; use a "
                                     "fresh output folder")
        return component
    if saved_here:
        saved = loader(directory)
        if saved.describe() != component.describe():
            raise ValueError(f"{directory} holds a {kind} with settings {saved.describe()}, but the config asks for "
                             f"{component.describe()}; use a fresh output folder")
        return saved
    print(f"fitting the {kind} ({component.name}) on up to {options.fit_max_files} files ...", flush=True)
    wavs, alignments = _fit_wavs(items, component.sample_rate, options, min_seconds)
    if getattr(component, "needs_alignments", False):
        component.fit(wavs, alignments)
    else:
        component.fit(wavs)
    component.save(directory)
    return component


def _encode_batch(batch, codec, tokenizer, upsample):
    """Codes ``[Q, T]`` and ids ``[S]`` per item of a batch of ``(codec_wav, semantic_wav)``."""
    codec_wavs, semantic_wavs = [b[0] for b in batch], [b[1] for b in batch]
    codes_BQT = codec.encode(torch.nn.utils.rnn.pad_sequence(codec_wavs, batch_first=True))
    semantic_lengths_B = torch.tensor([w.shape[0] for w in semantic_wavs])
    semantic_BS = tokenizer.tokenize(torch.nn.utils.rnn.pad_sequence(semantic_wavs, batch_first=True),
                                     lengths_B=semantic_lengths_B)
    out = []
    for b, (codec_wav, semantic_wav) in enumerate(zip(codec_wavs, semantic_wavs)):
        num_frames, num_semantic = codec.num_frames(codec_wav.shape[0]), tokenizer.num_frames(semantic_wav.shape[0])
        if num_frames > codes_BQT.shape[2] or num_semantic > semantic_BS.shape[1]:
            raise RuntimeError(f"{codec.name}/{tokenizer.name} returned fewer frames than num_frames() promises")
        kept_frames, kept_semantic = align_lengths(num_frames, num_semantic, upsample)
        out.append((codes_BQT[b, :, :kept_frames], semantic_BS[b, :kept_semantic]))
    return out


def _load_segments(item, codec, tokenizer, options, min_seconds, skipped) -> list[tuple]:
    """``(entry, codec_wav, semantic_wav, seconds)`` per segment of one input (none if it is bad)."""
    try:
        wav_N, rate = read_audio(item["path"], min_seconds)
    except BadAudio as err:
        skipped.append({"path": item["path"], "reason": str(err)})
        return []
    bounds = segment_bounds(wav_N, rate, options.segment)
    out = []
    for k, (begin, end) in enumerate(bounds):
        entry = item if len(bounds) == 1 else {**item, "utt_id": f"{item['utt_id']}_seg{k:04d}", "text": "",
                                                "segment": [round(begin / rate, 4), round(end / rate, 4)]}
        if (end - begin) / rate < min_seconds:
            skipped.append({"path": item["path"], "reason": f"segment {entry.get('segment')} shorter than one "
                                                            "semantic frame"})
            continue
        seg_N = wav_N[begin:end]
        out.append((entry, resample(seg_N, rate, codec.sample_rate), resample(seg_N, rate, tokenizer.sample_rate),
                    seg_N.shape[0] / rate))
    return out


def _process_shard(items, codec, tokenizer, upsample, options, min_seconds, bar=None):
    loaded, skipped = [], []
    for item in items:
        loaded.extend(_load_segments(item, codec, tokenizer, options, min_seconds, skipped))
        if bar is not None:
            bar.update(1)
    order = sorted(range(len(loaded)), key=lambda i: -loaded[i][1].shape[0])
    results = {}
    for lo in range(0, len(order), options.batch_size):
        idx = order[lo: lo + options.batch_size]
        for i, result in zip(idx, _encode_batch([loaded[i][1:3] for i in idx], codec, tokenizer, upsample)):
            results[i] = result
    kept = [i for i in range(len(loaded)) if results[i][1].shape[0] > 0]
    for i in sorted(set(range(len(loaded))) - set(kept)):
        skipped.append({"path": loaded[i][0]["path"], "reason": "too short (no whole semantic frame after alignment)"})
    return [(loaded[i][0], loaded[i][3], *results[i]) for i in kept], skipped


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""


def _write_shard(out: Path, name: str, inputs, stored, skipped, settings, shard_format) -> dict:
    utterances = []
    for j, (item, duration, codes_QT, semantic_S) in enumerate(stored):
        utterances.append({"utt_id": item["utt_id"], "shard": name, "index": j, "num_frames": int(codes_QT.shape[1]),
                           "num_semantic_frames": int(semantic_S.shape[0]), "duration": round(duration, 4),
                           "text": item["text"], "speaker": item.get("speaker", ""), "split": item.get("split", ""),
                           "path": relative_source_path(item["path"], out),
                           **({"segment": item["segment"]} if "segment" in item else {})})
    path = shard_path(out, name, shard_format)
    write_shard(path, [s[2] for s in stored], [s[3] for s in stored])
    if shard_format == "safetensors":  # byte ranges: a reader fetches one utterance without the header
        ranges = tensor_ranges(path)
        for j, utt in enumerate(utterances):
            utt["tensors"] = {kind: list(ranges[f"{kind}.{j}"][:3]) for kind in ("codes", "semantic")}
    sidecar = {"settings": settings, "inputs": [i["path"] for i in inputs], "utterances": utterances,
               "skipped": skipped}
    atomic_write_bytes(out / f"{name}.json", json.dumps(sidecar, ensure_ascii=False).encode())  # last: marks done
    return sidecar


def _done_sidecar(out: Path, name: str, inputs, settings) -> dict | None:
    path = out / f"{name}.json"
    if not path.is_file():
        return None
    sidecar = json.loads(path.read_text())
    if sidecar["settings"] != settings:
        raise ValueError(f"{path} was written with settings {sidecar['settings']}, now {settings}; "
                         "use a fresh output folder (or delete the old shards)")
    if [os.path.abspath(p) for p in sidecar["inputs"]] != [i["path"] for i in inputs]:  # older sidecars: relative
        raise ValueError(f"{path} covers different input files than this run plans (the input list changed); "
                         "use a fresh output folder")
    if not shard_path(out, name, settings["shard_format"]).is_file():
        return None
    return sidecar


def _needs_fit(component, directory: Path) -> bool:
    """Whether :func:`resolve_component` would fit ``component`` (unfitted, nothing saved in ``directory``)."""
    return not getattr(component, "is_fitted", True) and not (directory / "config.json").is_file()


def _resolve_both(codec, tokenizer, out: Path, items, options, min_seconds, pool):
    """The codec and the tokenizer (:func:`resolve_component` each). With a worker pool and both to fit, a
    worker fits and saves the tokenizer while this process fits the codec; the tokenizer is then loaded from
    what the worker saved. The two fits share nothing and each draws from its own seeded generator."""
    fitting = None
    if pool is not None and _needs_fit(codec, out / "codec") and _needs_fit(tokenizer, out / "semantic"):
        fitting = pool.submit(resolve_component, tokenizer, out / "semantic", load_tokenizer, items, options,
                              min_seconds, "semantic tokenizer")
    codec = resolve_component(codec, out / "codec", load_codec, items, options, min_seconds, "codec")
    if fitting is not None:
        fitting.result()  # raises the worker's error; on success the tokenizer is saved under out/semantic
    tokenizer = resolve_component(tokenizer, out / "semantic", load_tokenizer, items, options, min_seconds,
                                  "semantic tokenizer")
    return codec, tokenizer


def _start_worker(num_threads: int) -> None:
    """A worker computes with the thread count of the process that started it (a spawned process starts
    with torch's default), so its float sums, and its files, are those of a one-process run."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(num_threads)
    threadpool_limits(limits=num_threads)


_WORKER_COMPONENTS: dict[str, tuple] = {}


def _shard_in_worker(out: Path, name: str, shard_items, upsample: int, options: PrepareOptions, min_seconds: float,
                     settings: dict) -> dict:
    """Encode and write one shard in a worker process, with the codec and tokenizer saved under ``out``
    (loaded once per process); returns its sidecar."""
    if str(out) not in _WORKER_COMPONENTS:
        _WORKER_COMPONENTS[str(out)] = (load_codec(out / "codec"), load_tokenizer(out / "semantic"))
    codec, tokenizer = _WORKER_COMPONENTS[str(out)]
    with torch.inference_mode():
        stored, skipped = _process_shard(shard_items, codec, tokenizer, upsample, options, min_seconds)
    return _write_shard(out, name, shard_items, stored, skipped, settings, options.shard_format)


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes (not forked: a fork copies torch's and OpenMP's thread pools mid-state)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(torch.get_num_threads(),))


def prepare(options: PrepareOptions, codec, tokenizer) -> TokenManifest | None:
    """Run the whole preparation; returns the manifest, or None when ``max_shards`` stopped it early.

    With ``options.workers`` > 1 the tokenizer's fit and the shards run in worker processes; every shard
    is still written whole and atomically, and a failed one stops the rest (those finished stay, and a rerun
    continues from them)."""
    out = Path(options.output)
    items = list_inputs(options.input, options.audio_root)
    upsample = upsample_ratio(codec.frame_rate, tokenizer.frame_rate)
    min_seconds = 1.0 / tokenizer.frame_rate
    out.mkdir(parents=True, exist_ok=True)
    pool = _worker_pool(options.workers) if options.workers > 1 else None  # processes start on first use
    try:
        codec, tokenizer = _resolve_both(codec, tokenizer, out, items, options, min_seconds, pool)
        settings = {"codec": codec.describe(), "semantic": tokenizer.describe(), "semantic_upsample": upsample,
                    "shard_format": options.shard_format, "segment": dataclasses.asdict(options.segment),
                    "codec_weights_sha1": _sha1(out / "codec" / "weights.safetensors"),
                    "semantic_weights_sha1": _sha1(out / "semantic" / "weights.safetensors")}
        plan = [(f"shard-{k:05d}", items[lo: lo + options.shard_size])
                for k, lo in enumerate(range(0, len(items), options.shard_size))]
        sidecars, pending = {}, []
        for name, shard_items in plan:
            done = _done_sidecar(out, name, shard_items, settings)
            if done is None:
                pending.append((name, shard_items))
            else:
                sidecars[name] = done
        if sidecars:
            print(f"resuming: {len(sidecars)} of {len(plan)} shards already done", flush=True)
        todo = pending if options.max_shards is None else pending[: options.max_shards]
        with torch.inference_mode(), tqdm(total=sum(len(s) for _, s in todo), unit="utt", desc="prepare",
                                          disable=not options.progress) as bar:
            if pool is None or len(todo) < 2:
                for name, shard_items in todo:
                    stored, skipped = _process_shard(shard_items, codec, tokenizer, upsample, options, min_seconds,
                                                     bar)
                    sidecars[name] = _write_shard(out, name, shard_items, stored, skipped, settings,
                                                  options.shard_format)
            else:
                futures = {pool.submit(_shard_in_worker, out, name, shard_items, upsample, options, min_seconds,
                                       settings): (name, len(shard_items)) for name, shard_items in todo}
                for future in as_completed(futures):
                    name, count = futures[future]
                    sidecars[name] = future.result()  # a worker's error stops here; `finally` cancels the rest
                    bar.update(count)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if len(todo) < len(pending):
        print(f"stopped after {len(todo)} new shards (max_shards); rerun to continue", flush=True)
        return None
    utterances = [u for name, _ in plan for u in sidecars[name]["utterances"]]
    skipped = [s for name, _ in plan for s in sidecars[name]["skipped"]]
    if not utterances:
        raise ValueError(f"input={options.input}: every one of the {len(skipped)} input files was skipped, e.g. "
                         f"{skipped[0]['path']}: {skipped[0]['reason']}; expected readable, non-silent audio")
    manifest = TokenManifest(codec=codec.describe(), semantic=tokenizer.describe(), semantic_upsample=upsample,
                             shard_format=options.shard_format, source=str(options.input),
                             fingerprints={kind: component_fingerprint(out / kind) for kind in ("codec", "semantic")},
                             utterances=utterances, skipped=skipped,
                             audio_folder=relative_source_path(input_audio_root(options.input, options.audio_root), out))
    manifest.save(out)
    print_summary(manifest, out)
    return manifest


def print_summary(manifest: TokenManifest, out: Path) -> None:
    seconds = sum(u["duration"] for u in manifest.utterances)
    print(f"prepared {len(manifest.utterances)} utterances ({seconds:.1f} s) into {out}; codec {manifest.codec['name']} "
          f"Q={manifest.num_levels} at {manifest.frame_rate} Hz, semantic {manifest.semantic['name']} at "
          f"{manifest.semantic_frame_rate} Hz (upsample {manifest.semantic_upsample})", flush=True)
    if manifest.skipped:
        print(f"skipped {len(manifest.skipped)} files:", flush=True)
        for entry in manifest.skipped:
            print(f"  {entry['path']}: {entry['reason']}", flush=True)
