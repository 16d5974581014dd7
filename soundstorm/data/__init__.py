"""Token data: the manifest, shards, the windowed dataset, batching and preparation from audio."""

from soundstorm.data.dataset import TokenDataset, collate
from soundstorm.data.manifest import TokenManifest
from soundstorm.data.batching import LengthBucketSampler, split_heldout

__all__ = ["TokenDataset", "TokenManifest", "collate", "LengthBucketSampler", "split_heldout"]
