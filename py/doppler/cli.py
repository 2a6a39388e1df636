"""``doppler`` command line: convert, verify, inspect, synth (CPython only).

Every bad input ends in one ``error: ...`` line naming the field or file, and exit code 1;
usage mistakes exit 2 (argparse).
"""

import argparse
import sys
from pathlib import Path

from doppler.errors import DopplerError

BLOCK_HELP = (
    "bytes per block hash: a power of two from 4096 to 64M (default 1M); accepts K/M suffixes. "
    "Smaller blocks let a client fetch and verify small ranges (one MoE expert) alone"
)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20}


def _size(text: str) -> int:
    """``4096``, ``64K``, ``1M`` (binary units) -> bytes; range checks happen in the writer."""
    digits, unit = text.strip().lower().removesuffix("ib").removesuffix("b"), ""
    if digits and digits[-1] in "km":
        digits, unit = digits[:-1], digits[-1]
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 64K, 1M)")
    return int(digits) * _UNITS[unit]


def _block(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.block_size is None else {"block_size": args.block_size}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doppler", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="GGUF file or HF folder -> RDRR directory")
    convert.add_argument("src", type=Path)
    convert.add_argument("out", type=Path)
    convert.add_argument(
        "--quant",
        choices=("q4_0", "q8_0", "none"),
        default="none",
        help="quantize float matrices (default: keep stored types)",
    )
    convert.add_argument(
        "--mirror", action="append", default=[], help="base URL serving the shards (repeatable)"
    )
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.add_argument("--block-size", type=_size, default=None, help=BLOCK_HELP)

    verify = sub.add_parser("verify", help="re-hash every shard and block, check all ranges")
    verify.add_argument("dir", type=Path)
    verify.add_argument(
        "--no-weights",
        action="store_true",
        help="check manifest and index shards only (plan-only output)",
    )

    inspect = sub.add_parser("inspect", help="summarise a model")
    inspect.add_argument("manifest", type=Path)

    synth = sub.add_parser("synth", help="random-weight model of real shapes")
    synth.add_argument("--like", required=True, help="preset name or config.json path")
    synth.add_argument("out", type=Path)
    synth.add_argument(
        "--plan-only", action="store_true", help="write only the root manifest and index shards"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--layers", type=int, default=None, help="keep only the first N layers")
    synth.add_argument("--quant", choices=("q4_0", "q8_0", "f16", "bf16", "f32"), default="q4_0")
    synth.add_argument("--mirror", action="append", default=[])
    synth.add_argument("--quiet", action="store_true")
    synth.add_argument("--block-size", type=_size, default=None, help=BLOCK_HELP)
    return parser


def _run(args: argparse.Namespace) -> str:
    if args.command == "convert":
        from doppler.convert.convert import convert

        out = convert(
            args.src,
            args.out,
            quant=None if args.quant == "none" else args.quant,
            mirrors=_mirrors(args.mirror),
            progress=not args.quiet,
            **_block(args),
        )
        return f"wrote {out}"
    if args.command == "verify":
        from doppler.convert.verify import verify_model

        report = verify_model(args.dir, weights=not args.no_weights)
        return (
            f"ok {report.model_id}: {len(report.indexes)} index shard(s), "
            f"{report.shards_checked} weight shard(s), {report.bytes_checked} bytes hashed"
        )
    if args.command == "inspect":
        from doppler.convert.inspect import describe

        return describe(args.manifest)
    from doppler.convert.synth import synth

    out = synth(
        args.like,
        args.out,
        plan_only=args.plan_only,
        seed=args.seed,
        layers=args.layers,
        quant=args.quant,
        mirrors=_mirrors(args.mirror),
        progress=not args.quiet,
        **_block(args),
    )
    return f"wrote {out}"


def _mirrors(urls: list[str]) -> tuple[str, ...]:
    from doppler.format.names import check_mirror_url

    return tuple(check_mirror_url(u, "--mirror") for u in urls)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except DopplerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
