"""Sampling options, and choosing the next token from a row of logits.

Greedy when temperature is 0 (ties go to the lowest id, like numpy's argmax); otherwise
softmax(logits / temperature) restricted to the top-k ids and then to the smallest set whose
probability reaches top-p, drawn with a generator seeded from (seed, step) so a seed
reproduces a generation exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from doppler.errors import BadRequest


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def parse(cls, raw: dict) -> SamplingOptions:
        try:
            options = cls(
                float(raw.get("temperature", 0.0)),
                int(raw.get("topK", 0) or 0),
                float(raw.get("topP", 1.0)),
                int(raw.get("seed", 0) or 0),
            )
        except (TypeError, ValueError) as err:
            raise BadRequest(f"bad sampling option: {err}") from err
        if options.temperature < 0 or options.top_k < 0 or not 0 < options.top_p <= 1:
            raise BadRequest("temperature >= 0, topK >= 0 and 0 < topP <= 1 are required")
        return options


def sample(logits: list[float], options: SamplingOptions, step: int) -> int:
    if options.temperature == 0:
        return max(range(len(logits)), key=logits.__getitem__)
    order = sorted(range(len(logits)), key=logits.__getitem__, reverse=True)
    if options.top_k:
        order = order[: options.top_k]
    peak = logits[order[0]]
    weights = [math.exp((logits[i] - peak) / options.temperature) for i in order]
    total = math.fsum(weights)
    kept, mass = 0, 0.0
    for weight in weights:
        kept += 1
        mass += weight / total
        if mass >= options.top_p:
            break
    rng = random.Random(options.seed * 1_000_003 + step)
    return rng.choices(order[:kept], weights[:kept])[0]
