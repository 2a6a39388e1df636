"""SHA-256 helpers shared by the writer, the verifier and the runtime (hashlib only)."""

import hashlib

HASH_HEX = 64


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def block_hashes(data: bytes | bytearray | memoryview, block_size: int) -> str:
    """Concatenated hex SHA-256 of each ``block_size`` block (the last may be short)."""
    view = memoryview(data)
    return "".join(
        hashlib.sha256(view[i : i + block_size]).hexdigest()
        for i in range(0, len(view), block_size)
    )


def block_count(size: int, block_size: int) -> int:
    return -(-size // block_size)
