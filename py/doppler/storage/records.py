"""What the cache knows about a model: the shards it uses and when it was last loaded.

Records are small JSON files in OPFS (``doppler/models/<modelId>.json``, written by
``app/storage/opfs.js``); this module is their one Python shape, shared by eviction, the
cache API and the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    name: str
    url: str
    shards: dict[str, int]  # shard name -> size, every file of the model (index, tokenizer too)
    last_used: float  # ms since the epoch, like JS Date.now()

    @property
    def total_bytes(self) -> int:
        return sum(self.shards.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "modelId": self.model_id,
            "name": self.name,
            "url": self.url,
            "shards": dict(self.shards),
            "totalBytes": self.total_bytes,
            "lastUsed": self.last_used,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelRecord | None:
        """The record, or None for a record this version cannot read (it is then ignored)."""
        try:
            shards = {str(k): int(v) for k, v in dict(doc["shards"]).items()}
            return cls(
                str(doc["modelId"]),
                str(doc["name"]),
                str(doc["url"]),
                shards,
                float(doc["lastUsed"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
