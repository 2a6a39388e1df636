"""Print a JSON report of expert-cache hit rates: every policy vs Belady, across trace shapes.

Usage: ``python tools/paging_report.py [--quick] [--half-life TOKENS] [--jobs N]``.

Grid: three MoE shapes (Mixtral-8x7B, Qwen3-30B-A3B, Qwen1.5-MoE-A2.7B with a pinned shared
expert) x synthetic routing (uniform, Zipf skew, temporal locality, both) x cache sizes as a
fraction of all expert bytes. At 25% (the issue's benchmark budget) it also sweeps the
decay half-life and prefetch with a router that guesses each next-layer expert right with
probability p. Expert bytes assume 4.5 bits per weight (Q4_1-like).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))

from doppler.moe.simulator import ModelShape, NoisyRouter, policy_factories, simulate
from doppler.moe.traces import synthetic_trace


def _q4(params: int) -> int:
    return params * 9 // 16


SHAPES = (
    ModelShape("mixtral-8x7b", 32, 8, 2, _q4(3 * 4096 * 14336)),
    ModelShape("qwen3-30b-a3b", 48, 128, 8, _q4(3 * 2048 * 768)),
    ModelShape("qwen1.5-moe-a2.7b", 24, 60, 4, _q4(3 * 2048 * 1408), 1, _q4(3 * 2048 * 5632)),
)
TOKENS = {"mixtral-8x7b": 400, "qwen3-30b-a3b": 200, "qwen1.5-moe-a2.7b": 300}
SETTINGS = {"uniform": (0.0, 0.0), "zipf": (1.0, 0.0), "local": (0.0, 0.5), "both": (1.0, 0.5)}
FRACTIONS = (0.10, 0.25, 0.50, 0.75)
SWEEP_FRACTION = 0.25
HALF_LIVES = (2.0, 8.0, 32.0)
PREFETCH_POLICIES = ("lru", "lfu-decay", "cycle-lfu")
PREFETCH_ACCURACY = (0.6, 0.8, 1.0)


def run_cell(shape: ModelShape, setting: str, quick: bool, half_life: float) -> list[dict]:
    """All simulations for one (shape, routing setting): one trace, shared by every policy."""
    skew, locality = SETTINGS[setting]
    num_tokens = TOKENS[shape.name] // (3 if quick else 1)
    trace = synthetic_trace(
        shape.num_layers, shape.num_experts, shape.top_k, num_tokens,
        skew=skew, locality=locality, seed=7,
    )  # fmt: skip
    sizes = shape.sizes()
    warmup = num_tokens // 4

    def run(policy: str, fraction: float, hl: float, accuracy: float | None) -> dict:
        capacity = int(fraction * shape.total_bytes)
        cache = policy_factories(hl)[policy](capacity, sizes, trace)
        router = None if accuracy is None else NoisyRouter(accuracy, shape.num_experts, seed=11)
        stats = simulate(
            trace, cache, sizes, pinned=shape.shared_keys(), router=router, warmup_tokens=warmup
        )
        return {
            "shape": shape.name, "setting": setting, "fraction": fraction, "policy": policy,
            "half_life_tokens": hl, "prefetch_accuracy": accuracy, **stats.summary(),
        }  # fmt: skip

    rows = [
        run(policy, fraction, half_life, None)
        for fraction in FRACTIONS
        for policy in policy_factories(half_life)
    ]
    rows += [
        run(policy, SWEEP_FRACTION, hl, None)
        for hl in HALF_LIVES
        if hl != half_life
        for policy in ("lfu-decay", "cycle-lfu")
    ]
    rows += [
        run(policy, SWEEP_FRACTION, half_life, accuracy)
        for accuracy in PREFETCH_ACCURACY
        for policy in PREFETCH_POLICIES
    ]
    return rows


def summarize(rows: list[dict], half_life: float) -> dict[str, Any]:
    """Headline tables: hit rate at 25%, wins per policy, prefetch effect."""
    main = [
        r for r in rows if r["half_life_tokens"] == half_life and r["prefetch_accuracy"] is None
    ]
    at_25: dict[str, dict[str, dict[str, float]]] = {}
    for r in main:
        if r["fraction"] == SWEEP_FRACTION:
            at_25.setdefault(r["shape"], {}).setdefault(r["setting"], {})[r["policy"]] = r[
                "hit_rate"
            ]
    wins: dict[str, int] = {}
    cells: dict[tuple, list[dict]] = {}
    for r in main:
        if r["policy"] != "belady":
            cells.setdefault((r["shape"], r["setting"], r["fraction"]), []).append(r)
    for group in cells.values():
        best = max(r["hit_rate"] for r in group)
        for r in group:
            if r["hit_rate"] >= best - 0.005:  # ties within half a point count for both
                wins[r["policy"]] = wins.get(r["policy"], 0) + 1
    half_life_sweep: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        swept = r["policy"] in ("lfu-decay", "cycle-lfu") and r["prefetch_accuracy"] is None
        if swept and r["fraction"] == SWEEP_FRACTION:
            key = f"{r['policy']}@{r['half_life_tokens']:g}"
            half_life_sweep.setdefault(r["shape"], {}).setdefault(r["setting"], {})[key] = r[
                "hit_rate"
            ]
    prefetch: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for r in main + [r for r in rows if r["prefetch_accuracy"] is not None]:
        if r["fraction"] != SWEEP_FRACTION or r["policy"] not in PREFETCH_POLICIES:
            continue
        p = "none" if r["prefetch_accuracy"] is None else f"p={r['prefetch_accuracy']:g}"
        prefetch.setdefault(r["shape"], {}).setdefault(r["setting"], {}).setdefault(
            r["policy"], {}
        )[p] = {
            "hit_rate": r["hit_rate"],
            "misses_per_token": r["misses_per_token"],
            "MiB_per_token": round(r["bytes_per_token"] / 2**20, 2),
            "wasted_MiB_per_token": round(r["wasted_prefetch_bytes_per_token"] / 2**20, 2),
        }
    return {
        "hit_rate_at_25pct": at_25,
        "near_best_online_cells": wins,
        "half_life_sweep_at_25pct": half_life_sweep,
        "prefetch_at_25pct": prefetch,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the tokens, 2 settings")
    parser.add_argument("--half-life", type=float, default=8.0, help="decay half-life (tokens)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    settings = ("uniform", "both") if args.quick else tuple(SETTINGS)
    cells = [(shape, setting) for shape in SHAPES for setting in settings]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_cell, s, st, args.quick, args.half_life) for s, st in cells]
        rows = [row for future in futures for row in future.result()]
    report = {
        "config": {
            "quick": args.quick,
            "half_life_tokens": args.half_life,
            "settings": {name: {"skew": s, "locality": q} for name, (s, q) in SETTINGS.items()},
            "fractions": FRACTIONS,
            "prefetch_accuracy": PREFETCH_ACCURACY,
            "shapes": [
                {
                    **vars(shape),
                    "total_bytes": shape.total_bytes,
                    "tokens": TOKENS[shape.name] // (3 if args.quick else 1),
                }
                for shape in SHAPES
            ],
        },
        "summary": summarize(rows, args.half_life),
        "results": rows,
    }
    json.dump(report, sys.stdout, indent=1)
    print()
    return report


if __name__ == "__main__":
    main()
