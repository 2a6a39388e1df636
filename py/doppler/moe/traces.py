"""Routing traces: which experts each token chose at each layer.

A trace drives the paging simulator. Real traces come from the runtime as JSON::

    {"num_layers": L, "num_experts": E, "top_k": K,
     "tokens": [[[e, ...] (K distinct ids in [0, E)) per layer (L of them)] per token]}

Random-weight models route almost uniformly, which says nothing about trained models, so
:func:`synthetic_trace` also generates traces with tunable per-layer popularity skew and
token-to-token locality. Pure Python with ``random`` (it also runs in Pyodide).
"""

from __future__ import annotations

import json
import random
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from doppler.moe.policy import Key, PagingError


class TraceError(PagingError):
    """A routing trace is malformed; the message names the field."""

    code = "bad_trace"


@dataclass(frozen=True)
class Trace:
    """``tokens[t][layer]`` is the tuple of expert ids token ``t`` routed to at ``layer``."""

    num_layers: int
    num_experts: int
    top_k: int
    tokens: tuple[tuple[tuple[int, ...], ...], ...]

    def __post_init__(self) -> None:
        for field in ("num_layers", "num_experts", "top_k"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TraceError(f"{field} must be a positive integer, got {value!r}")
        if self.top_k > self.num_experts:
            raise TraceError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        for t, token in enumerate(self.tokens):
            if len(token) != self.num_layers:
                raise TraceError(
                    f"tokens[{t}] has {len(token)} layers, num_layers is {self.num_layers}"
                )
            for layer, experts in enumerate(token):
                if len(experts) != self.top_k or len(set(experts)) != self.top_k:
                    raise TraceError(f"tokens[{t}][{layer}] must be {self.top_k} distinct ids")
                for e in experts:
                    if not isinstance(e, int) or isinstance(e, bool):
                        raise TraceError(f"tokens[{t}][{layer}] holds a non-integer {e!r}")
                    if not 0 <= e < self.num_experts:
                        raise TraceError(f"tokens[{t}][{layer}] holds {e}, out of range")

    def steps(self) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """``(token, layer, experts)`` in execution order."""
        for t, token in enumerate(self.tokens):
            for layer, experts in enumerate(token):
                yield t, layer, experts

    def requests(self) -> list[list[Key]]:
        """The key list of every step, in order: what a pager will ``request``."""
        return [[(layer, e) for e in experts] for _, layer, experts in self.steps()]

    def to_json(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "tokens": [[list(experts) for experts in token] for token in self.tokens],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Trace:
        if not isinstance(obj, dict):
            raise TraceError("a trace must be a JSON object")
        missing = [f for f in ("num_layers", "num_experts", "top_k", "tokens") if f not in obj]
        if missing:
            raise TraceError(f"trace is missing {', '.join(missing)}")
        tokens = obj["tokens"]
        if not isinstance(tokens, list) or not all(
            isinstance(token, list) and all(isinstance(layer, list) for layer in token)
            for token in tokens
        ):
            raise TraceError("tokens must be a list (tokens) of lists (layers) of lists (ids)")
        return cls(
            obj["num_layers"],
            obj["num_experts"],
            obj["top_k"],
            tuple(tuple(tuple(layer) for layer in token) for token in tokens),
        )


def load_trace(path: str | Path) -> Trace:
    """Read a JSON trace file (format in the module docstring)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise TraceError(f"{path}: cannot read a JSON trace ({err})") from err
    try:
        return Trace.from_json(obj)
    except TraceError as err:
        raise TraceError(f"{path}: {err}") from err


def _zipf_cum_weights(num_experts: int, skew: float, rng: random.Random) -> list[float]:
    """Cumulative Zipf(``skew``) weights over experts in a random order (hot set per layer)."""
    ranks = list(range(1, num_experts + 1))
    rng.shuffle(ranks)
    return list(accumulate(rank**-skew for rank in ranks))


def _draw_distinct(
    cum_weights: Sequence[float], count: int, taken: set[int], rng: random.Random
) -> list[int]:
    """``count`` popularity-weighted ids not in ``taken`` (rejection; count << experts)."""
    total = cum_weights[-1]
    drawn: list[int] = []
    while len(drawn) < count:
        e = bisect_left(cum_weights, rng.random() * total)
        if e not in taken:
            taken.add(e)
            drawn.append(e)
    return drawn


def synthetic_trace(
    num_layers: int,
    num_experts: int,
    top_k: int,
    num_tokens: int,
    *,
    skew: float = 0.0,
    locality: float = 0.0,
    seed: int = 0,
) -> Trace:
    """A deterministic synthetic trace.

    ``skew`` is the Zipf exponent of per-layer expert popularity (0: uniform, as random
    weights route); each layer has its own hot experts. ``locality`` is the probability that
    each of the previous token's experts at a layer is chosen again (0: independent tokens;
    1: every token repeats the first). Fresh picks follow the popularity.
    """
    if not 0.0 <= locality <= 1.0:
        raise TraceError(f"locality must be in [0, 1], got {locality}")
    if skew < 0.0:
        raise TraceError(f"skew must be >= 0, got {skew}")
    if top_k > num_experts:
        raise TraceError(f"top_k={top_k} exceeds num_experts={num_experts}")
    rng = random.Random(seed)
    popularity = [_zipf_cum_weights(num_experts, skew, rng) for _ in range(num_layers)]
    previous: list[tuple[int, ...]] = []
    tokens = []
    for _ in range(num_tokens):
        token = []
        for layer in range(num_layers):
            kept = [e for e in previous[layer] if rng.random() < locality] if previous else []
            fresh = _draw_distinct(popularity[layer], top_k - len(kept), set(kept), rng)
            token.append(tuple(kept + fresh))
        previous = token
        tokens.append(tuple(token))
    return Trace(num_layers, num_experts, top_k, tuple(tokens))
