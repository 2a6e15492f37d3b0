"""Fragment ids as Merkle roots: what each leaf size and hash costs, beside flat SHA-256.

Why: a put computes the id of every fragment it makes, and a holder answers an audit with one
leaf and its path; the leaf size trades the first (more leaves, more Python-level hashes)
against the second (bigger leaves, bigger answers).  This prints, for 1 MiB fragments (4 MiB
chunks, 4-of-8), MiB/s of computing ids with each leaf size and hash, beside the raw ceiling of
the same hash over the whole fragment in one call, and the size of one audit answer.  The row
marked ``*`` is :data:`p2pstore.codec.fragment_ids.SCHEME`, the one p2pstore uses.  It also
times what a holder does to answer one challenge on a disk store: read the fragment (hashed on
read) and build the proof.

BLAKE3 rows appear only if the ``blake3`` package can be imported (it is not a dependency).

Run: ``python benchmarks/merkle.py`` (about 30 s on 2 cores); ``--repeats N``, ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from p2pstore.codec.fragment_ids import SCHEME, Hasher, MerkleScheme, fragment_id
from p2pstore.store import DiskFragmentStore

MiB = 1024 * 1024
KiB = 1024
LEAF_SIZES = (4 * KiB, 16 * KiB, 64 * KiB)


def _hashes() -> dict[str, Callable[[], Hasher]]:
    found: dict[str, Callable[[], Hasher]] = {"sha256": hashlib.sha256}
    try:
        import blake3  # type: ignore[import-not-found]
    except ImportError:
        return found
    found["blake3"] = blake3.blake3
    return found


def _median_rate(run: Callable[[], object], total: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return total / MiB / statistics.median(times)


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(fragment_size: int, count: int, repeats: int) -> dict[str, object]:
    """The figures as a dict (see the module docstring)."""
    rng = random.Random(1)
    fragments = [rng.randbytes(fragment_size) for _ in range(count)]
    total = fragment_size * count
    rows: list[dict[str, object]] = []
    for name, new in _hashes().items():

        def flat(new: Callable[[], Hasher] = new) -> None:
            for data in fragments:
                hasher = new()
                hasher.update(data)
                hasher.digest()

        ceiling = _median_rate(flat, total, repeats)
        rows.append({"hash": name, "leaf": None, "mib_s": ceiling, "ratio": 1.0})
        for leaf in LEAF_SIZES:
            scheme = MerkleScheme(leaf, new)

            def tree(scheme: MerkleScheme = scheme) -> None:
                for data in fragments:
                    scheme.fragment_id(data)

            rate = _median_rate(tree, total, repeats)
            proof = scheme.audit_proof(fragments[0], scheme.leaf_count(fragment_size) // 3)
            chosen = leaf == SCHEME.leaf_size and new is hashlib.sha256
            rows.append({
                "hash": name, "leaf": leaf, "mib_s": rate, "ratio": rate / ceiling,
                "proof_bytes": proof.size, "path": len(proof.path), "chosen": chosen,
            })  # fmt: skip
    return {
        "fragment_bytes": fragment_size,
        "fragments": count,
        "rows": rows,
        "holder": _holder_cost(fragments[: min(count, 16)], repeats),
    }


def _holder_cost(fragments: list[bytes], repeats: int) -> dict[str, float]:
    """Milliseconds for a holder to answer one challenge from a disk store: read (hashed on
    read), then build the proof; and the proof alone."""
    with tempfile.TemporaryDirectory() as directory:
        store = DiskFragmentStore(Path(directory) / "store", 1 << 40)
        ids = [fragment_id(data) for data in fragments]
        for fid, data in zip(ids, fragments, strict=True):
            store.put(fid, data)
        rng = random.Random(2)
        leaves = SCHEME.leaf_count(len(fragments[0]))

        def answer() -> None:
            for fid in ids:
                SCHEME.audit_proof(store.get(fid), rng.randrange(leaves))

        def proof_only() -> None:
            for data in fragments:
                SCHEME.audit_proof(data, rng.randrange(leaves))

        try:
            return {
                "read_and_prove_ms": _median_seconds(answer, repeats) / len(ids) * 1000,
                "prove_ms": _median_seconds(proof_only, repeats) / len(ids) * 1000,
            }
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fragments", type=int, default=64, help="1 MiB fragments per timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(MiB, args.fragments, args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"fragment ids of {args.fragments} fragments of 1 MiB, one thread, median of "
        f"{args.repeats}; MiB/s of fragment bytes"
    )
    print(f"{'hash':8} {'leaf':>8} {'MiB/s':>8} {'of flat':>8} {'proof B':>9} {'path':>5}")
    for row in result["rows"]:  # type: ignore[attr-defined]
        leaf = "flat" if row["leaf"] is None else f"{row['leaf'] // KiB} KiB"
        proof = "" if row["leaf"] is None else f"{row['proof_bytes']:>9} {row['path']:>5}"
        mark = " *" if row.get("chosen") else ""
        print(f"{row['hash']:8} {leaf:>8} {row['mib_s']:8.0f} {row['ratio']:8.0%} {proof}{mark}")
    holder = result["holder"]
    print(
        f"answering one challenge on a disk store (1 MiB, page cache warm): read + hash on read "
        f"+ proof {holder['read_and_prove_ms']:.2f} ms, proof alone {holder['prove_ms']:.2f} ms"  # type: ignore[index]
    )


if __name__ == "__main__":
    main()
