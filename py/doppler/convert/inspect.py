"""``doppler inspect MANIFEST``: a readable summary of a model (arch, params, sizes, experts).

Reads the root manifest, and the index shards too when they sit beside it.
"""

from pathlib import Path

from doppler.convert.verify import MANIFEST_NAME, load_model
from doppler.format.errors import MissingFileError
from doppler.format.index import Index
from doppler.format.manifest import Manifest, model_id, parse_manifest


def human(n: float, unit: str = "B") -> str:
    step = 1024.0 if unit == "B" else 1000.0
    prefixes = ("", "Ki", "Mi", "Gi", "Ti", "Pi") if unit == "B" else ("", "K", "M", "B", "T")
    for prefix in prefixes[:-1]:
        if abs(n) < step:
            return f"{n:.1f} {prefix}{unit}".rstrip() if prefix else f"{n:.0f} {unit}".rstrip()
        n /= step
    return f"{n:.1f} {prefixes[-1]}{unit}".rstrip()


def describe(path: Path) -> str:
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    try:
        data = manifest_path.read_bytes()
    except OSError:
        raise MissingFileError(f"{manifest_path}: cannot read the manifest") from None
    manifest = parse_manifest(data)
    indexes = None
    if all((folder / f"{r.name}.bin").is_file() for r in manifest.index):
        _, _, indexes = load_model(folder)
    return "\n".join(_lines(model_id(data), manifest, indexes))


def _lines(ident: str, m: Manifest, indexes: dict[str, Index] | None) -> list[str]:
    c = m.config
    rope = c.rope
    scaling = rope.scaling.type if rope.scaling else "none"
    out = [
        f"model      {m.name}",
        f"identity   {ident}",
        f"source     {m.source}",
        f"arch       {c.arch}: {c.num_layers} layers (+{c.mtp_layers} MTP), hidden "
        f"{c.hidden_size}, heads {c.num_heads}/{c.num_kv_heads} x {c.head_dim}, vocab "
        f"{c.vocab_size}, context {c.max_position}",
        f"rope       theta {rope.theta:g} (local {rope.local_theta}), dim {rope.dim}, style "
        f"{rope.style}, scaling {scaling}",
        f"norm       rms eps {c.norm.eps:g}, weight offset {c.norm.weight_offset:g}, "
        f"post norms {c.norm.post_norms}; activation {c.activation}; tied {c.tie_embeddings}",
    ]
    if c.mla:
        out.append(
            f"mla        q_lora {c.mla.q_lora_rank}, kv_lora {c.mla.kv_lora_rank}, "
            f"rope {c.mla.qk_rope_head_dim}, nope {c.mla.qk_nope_head_dim}, "
            f"v {c.mla.v_head_dim}"
        )
    if c.moe:
        moe = c.moe
        n_moe = sum(c.is_moe_layer(layer) for layer in range(c.total_layers))
        out.append(
            f"experts    {moe.num_experts} routed (+{moe.num_shared_experts} shared) in "
            f"{n_moe} layers, top-{moe.top_k} {moe.scoring}, groups "
            f"{moe.topk_group}/{moe.n_group}, renormalize {moe.renormalize}"
        )
    out += [
        f"params     {human(m.param_count, '')} in {m.tensor_count} tensors, "
        f"{m.bits_per_weight:.3f} bits/weight",
        f"size       {human(m.total_size)} in {m.shard_count} files",
    ]
    for name, stat in sorted(m.layouts.items()):
        out.append(
            f"  {name:6s}   {stat.tensors:6d} tensors  {human(stat.params, ''):>8s} "
            f"params  {human(stat.bytes):>10s}"
        )
    biggest = max(m.index, key=lambda r: r.size)
    out.append(f"index      {len(m.index)} shard(s), largest {human(biggest.size)}")
    if indexes and c.moe:
        sizes = [sum(s.size for s in e.spans) for i in indexes.values() for e in i.experts.values()]
        out.append(
            f"expert     {len(sizes)} entries, {human(sum(sizes) / len(sizes))} each "
            f"on average, largest {human(max(sizes))}"
        )
    return out
