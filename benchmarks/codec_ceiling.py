"""The single-core ceiling of the codec pipeline: raw AEAD + zfec + SHA-256 over the same data.

Why: a put or get can never beat the CPU work it must do on one core.  The data-path benchmark
reports its throughput next to this ceiling, measured in the same run on the same machine, so a
slow put is blamed on the right thing (coding, I/O or our own overhead).  The "codec" rows run
p2pstore's own ObjectEncoder/ObjectDecoder over the same data: the gap to the raw pipeline is
the codec's overhead (fragment headers, copies, checks).

All figures are MiB/s of *user data* (plaintext), median of ``repeats`` runs, one thread.  The
decode rows use the last k shares -- all parity when n >= 2k -- the worst case for zfec.

Run: ``python benchmarks/codec_ceiling.py`` (about 30 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable

import zfec

from p2pstore.codec import CIPHERS, ObjectDecoder, ObjectEncoder

MiB = 1024 * 1024
_AD = b"benchmark associated data"


def _median_rate(run: Callable[[], object], total_bytes: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return total_bytes / MiB / statistics.median(times)


def _split(ciphertext: bytes, k: int) -> tuple[list[memoryview], int]:
    size = -(-len(ciphertext) // k)
    pad = size * k - len(ciphertext)
    view = memoryview(ciphertext + bytes(pad) if pad else ciphertext)
    return [view[i * size : (i + 1) * size] for i in range(k)], size


def measure_ceiling(
    k: int,
    n: int,
    chunk_size: int,
    total_bytes: int,
    *,
    cipher: str = "aes-256-gcm",
    repeats: int = 5,
    seed: int = 1,
) -> dict[str, float]:
    """MiB/s of user data for each stage alone, the raw encode and decode pipelines, and the
    codec's own encoder and decoder, over ``total_bytes`` of random data in ``chunk_size``
    chunks with ``k``-of-``n`` coding.  Median of ``repeats`` runs."""
    data = random.Random(seed).randbytes(total_bytes)
    chunks = [data[i : i + chunk_size] for i in range(0, total_bytes, chunk_size)]
    aead = CIPHERS[cipher](bytes(range(32)))
    nonces = [i.to_bytes(12, "big") for i in range(len(chunks))]
    encoder, decoder = zfec.Encoder(k, n), zfec.Decoder(k, n)
    last_k = tuple(range(n - k, n))

    sealed = [aead.encrypt(nonces[i], c, _AD) for i, c in enumerate(chunks)]
    split = [_split(c, k) for c in sealed]
    coded = [encoder.encode(tuple(blocks)) for blocks, _ in split]
    survivors = [tuple(blocks[s] for s in last_k) for blocks in coded]

    def aead_encrypt() -> None:
        for i, c in enumerate(chunks):
            aead.encrypt(nonces[i], c, _AD)

    def aead_decrypt() -> None:
        for i, c in enumerate(sealed):
            aead.decrypt(nonces[i], c, _AD)

    def zfec_encode() -> None:
        for c in sealed:
            encoder.encode(tuple(_split(c, k)[0]))

    def zfec_decode() -> None:
        for blocks in survivors:
            decoder.decode(blocks, last_k)

    def sha256_n() -> None:
        for blocks in coded:
            for b in blocks:
                hashlib.sha256(b).digest()

    def encode_pipeline() -> None:
        for i, c in enumerate(chunks):
            blocks, _ = _split(aead.encrypt(nonces[i], c, _AD), k)
            for b in encoder.encode(tuple(blocks)):
                hashlib.sha256(b).digest()

    def decode_pipeline() -> None:
        for i, blocks in enumerate(survivors):
            for b in blocks:
                hashlib.sha256(b).digest()
            padded = b"".join(decoder.decode(blocks, last_k))
            aead.decrypt(nonces[i], memoryview(padded)[: len(sealed[i])], _AD)

    key = bytes(range(32))
    enc = ObjectEncoder(key, total_bytes, k=k, n=n, chunk_size=chunk_size, cipher=cipher)
    fragments = [enc.encode_chunk(c) for c in chunks]
    manifest = enc.finish().manifest
    codec_survivors = [{s: f.fragments[s] for s in last_k} for f in fragments]

    def codec_encode() -> None:
        e = ObjectEncoder(key, total_bytes, k=k, n=n, chunk_size=chunk_size, cipher=cipher)
        for c in chunks:
            e.encode_chunk(c)
        e.finish()

    def codec_decode() -> None:
        d = ObjectDecoder(manifest, key)
        for i, frags in enumerate(codec_survivors):
            d.decode_chunk(i, frags)

    stages = {
        "aead_encrypt": aead_encrypt,
        "aead_decrypt": aead_decrypt,
        "zfec_encode": zfec_encode,
        "zfec_decode": zfec_decode,
        "sha256_n_blocks": sha256_n,
        "encode_pipeline": encode_pipeline,
        "decode_pipeline": decode_pipeline,
        "codec_encode": codec_encode,
        "codec_decode": codec_decode,
    }
    return {name: _median_rate(run, total_bytes, repeats) for name, run in stages.items()}


def main() -> None:
    """Print the ceiling table for both AEADs and two coding rules."""
    chunk_size, total = 4 * MiB, 32 * MiB
    rows = []
    for cipher in ("aes-256-gcm", "chacha20-poly1305"):
        for k, n in ((3, 10), (4, 8)):
            rows.append((cipher, k, n, measure_ceiling(k, n, chunk_size, total, cipher=cipher)))
    names = list(rows[0][3])
    print(f"MiB/s of user data, {total // MiB} MiB in {chunk_size // MiB} MiB chunks, median of 5")
    print(f"{'cipher':18} {'k/n':5} " + " ".join(f"{name:>15}" for name in names))
    for cipher, k, n, result in rows:
        cells = " ".join(f"{result[name]:15.0f}" for name in names)
        print(f"{cipher:18} {f'{k}/{n}':5} {cells}")


if __name__ == "__main__":
    main()
