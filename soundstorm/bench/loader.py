"""Loader benchmark: items/s and bytes read per item on a LibriLight-size synthetic token store.

``python -m soundstorm.bench.loader --gigabytes 10 --output loader.json`` writes a token folder
whose shards hold at least that many bytes of token tensors, as *sparse* files (the safetensors
header is real, the tensor data are holes that read back as zeros, so 10 GB cost no disk space),
with a real ``manifest.json`` (the paper recipe's token shapes: EnCodec 6 kbps, Q = 8 at 75 Hz,
HuBERT ids at 25 Hz, utterances of ``--min-seconds``–``--max-seconds`` as segmentation leaves
them). It then draws ``--num-items`` random items from :class:`~soundstorm.data.TokenDataset`
(random 0–30 s windows, as training does) and reports:

* items/s and the bytes the process read per item, from the kernel's ``rchar`` counter
  (``/proc/self/io``: every byte returned by a read system call), against the item's own tensor
  bytes (codes + semantic of its utterance);
* the same for a whole-shard read per item (what a reader that loads a shard per cache miss pays
  under random access), on ``--num-whole-shard`` items.

The data are holes, so the times measure the software path (system calls, conversion, windowing)
on a warm kernel, not a disk; the byte counts are what a real disk or network filesystem would
have to serve.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from soundstorm.data.manifest import TokenManifest
from soundstorm.data import TokenDataset
from soundstorm.data.shards import read_shard, shard_path

CODEC = {"name": "synthetic_encodec_6kbps", "sample_rate": 24000, "frame_rate": 75.0, "num_levels": 8,
         "codebook_size": 1024, "bandwidth": 6.0}
SEMANTIC = {"name": "synthetic_hubert_kmeans", "frame_rate": 25.0, "vocab_size": 1024}
UPSAMPLE = 3


def _write_sparse_shard(path: Path, semantic_lengths: list[int]) -> list[dict]:
    """A safetensors file of int16 ``codes.j [8, 3·S_j]`` and ``semantic.j [S_j]`` whose data are holes."""
    header, ranges, offset = {"__metadata__": {"format": "soundstorm-tokens/v1"}}, [], 0
    for j, num_semantic in enumerate(semantic_lengths):
        entry = {}
        for kind, shape in (("codes", [CODEC["num_levels"], num_semantic * UPSAMPLE]), ("semantic", [num_semantic])):
            size = 2 * int(np.prod(shape))
            header[f"{kind}.{j}"] = {"dtype": "I16", "shape": shape, "data_offsets": [offset, offset + size]}
            entry[kind] = (offset, offset + size)
            offset += size
        ranges.append(entry)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)  # sparse: no data blocks are written
    start = 8 + len(blob)
    return [{kind: [start + a, start + b, "I16"] for kind, (a, b) in entry.items()} for entry in ranges]


def build_store(root, min_bytes: int, shard_size: int = 1024, min_seconds: float = 10.0, max_seconds: float = 30.0,
                seed: int = 0) -> TokenManifest:
    """Write the synthetic token folder (sparse shards + manifest) holding at least ``min_bytes``."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    utterances, total, k = [], 0, 0
    while total < min_bytes:
        seconds = rng.uniform(min_seconds, max_seconds, shard_size)
        lengths = np.maximum(1, np.round(seconds * SEMANTIC["frame_rate"])).astype(int).tolist()
        name = f"shard-{k:05d}"
        for j, (num_semantic, where) in enumerate(zip(lengths, _write_sparse_shard(root / f"{name}.safetensors",
                                                                                   lengths))):
            utterances.append({"utt_id": f"{name}-{j:05d}", "shard": name, "index": j,
                               "num_frames": num_semantic * UPSAMPLE, "num_semantic_frames": num_semantic,
                               "duration": num_semantic / SEMANTIC["frame_rate"], "text": "", "path": "",
                               "tensors": where})
            total += sum(b - a for a, b, _ in where.values())
        k += 1
    manifest = TokenManifest(codec=CODEC, semantic=SEMANTIC, semantic_upsample=UPSAMPLE, utterances=utterances,
                             source="synthetic (soundstorm.bench.loader)")
    manifest.save(root)
    return manifest


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def measure(root, num_items: int, num_whole_shard: int, seed: int = 0) -> dict:
    """Items/s and bytes read per item: the lazy per-item path, then whole-shard reads."""
    start = time.perf_counter()
    dataset = TokenDataset(root, min_seconds=0.0, max_seconds=30.0, seed=seed)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(dataset), num_items).tolist()
    own = [sum(b - a for a, b, _ in dataset.utterances[i]["tensors"].values()) for i in indices]
    read, start = [], time.perf_counter()
    for i in indices:
        before = _rchar()
        dataset[i]
        read.append(_rchar() - before)
    lazy_s = time.perf_counter() - start
    ratios = [r / o for r, o in zip(read, own)]
    whole_bytes, start = [], time.perf_counter()
    for i in indices[:num_whole_shard]:
        path = shard_path(root, dataset.utterances[i]["shard"], "safetensors")
        read_shard(path)
        whole_bytes.append(path.stat().st_size)
    whole_s = time.perf_counter() - start
    return {
        "num_utterances": len(dataset), "manifest_load_s": load_s,
        "per_item": {"items": num_items, "items_per_s": num_items / lazy_s,
                     "bytes_read_per_item_mean": float(np.mean(read)), "own_bytes_per_item_mean": float(np.mean(own)),
                     "read_over_own_mean": float(np.mean(ratios)), "read_over_own_max": float(np.max(ratios))},
        "whole_shard_per_item": {"items": num_whole_shard, "items_per_s": num_whole_shard / max(whole_s, 1e-9),
                                 "bytes_per_item_mean": float(np.mean(whole_bytes)) if whole_bytes else None,
                                 "definition": "safetensors load of the item's whole shard (memory-mapped; bytes = "
                                               "the shard's size, what a cold cache must serve)"},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundstorm.bench.loader", description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=10.0, help="token bytes in the store (default 10)")
    parser.add_argument("--root", default=None, help="where to build the store (default: a temporary folder, removed)")
    parser.add_argument("--num-items", type=int, default=5000)
    parser.add_argument("--num-whole-shard", type=int, default=20)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if not args.gigabytes > 0 or args.num_items < 1 or args.num_whole_shard < 0 or args.shard_size < 1:
        parser.error(f"need --gigabytes > 0, --num-items >= 1, --num-whole-shard >= 0, --shard-size >= 1; got "
                     f"{args.gigabytes}, {args.num_items}, {args.num_whole_shard}, {args.shard_size}")
    if not os.path.exists("/proc/self/io"):
        parser.error("bytes read are measured with /proc/self/io (Linux only)")
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="soundstorm_loader_"))
    try:
        start = time.perf_counter()
        manifest = build_store(root, int(args.gigabytes * 1e9), args.shard_size, seed=args.seed)
        build_s = time.perf_counter() - start
        shards = sorted(root.glob("*.safetensors"))
        result = {"store": {"gigabytes_of_tokens": sum(p.stat().st_size for p in shards) / 1e9,
                            "disk_gigabytes_used": sum(p.stat().st_blocks * 512 for p in shards) / 1e9,
                            "num_shards": len(shards), "num_utterances": len(manifest.utterances),
                            "hours_of_audio": sum(u["duration"] for u in manifest.utterances) / 3600,
                            "build_s": build_s, "codec": CODEC, "semantic": SEMANTIC},
                  **measure(root, args.num_items, args.num_whole_shard, args.seed)}
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
