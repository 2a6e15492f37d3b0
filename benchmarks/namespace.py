"""The bucket index's costs per name: bytes on a replica, signing, verifying, merging, listing.

Why: a bucket of a million names must stay usable.  Today a client lists a bucket by reading
the whole index from the replicas and verifying every entry (replicas never see names, so they
cannot filter by prefix), so a cold listing costs about ``names x (transfer + verify)``; this
measures each factor on one core, pure code, no network:

* ``entry_bytes``: one PUT entry as stored and sent (sealed 20-character name and read cap,
  signer certificate included), i.e. index bytes per name on each replica;
* ``sign_per_s`` / ``verify_per_s``: entries a client signs, and a replica or reader verifies
  (signature + certificate, the certificate check cached as nodes do);
* ``merge_per_s``: verified entries joined into an index;
* ``list_prefix_s``: opening every payload of an index held in memory and listing a prefix
  (a warm client with its index already merged);
* ``cold_list_s``: the estimate for a cold client: verify + merge + list, per ``names``.

Run: ``python benchmarks/namespace.py [names]`` (default 20,000; about 30 s on 2 cores).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

from p2pstore.codec.bucket_keys import BucketKeys, EntryPayload
from p2pstore.core.bucket_entries import Op, sign_entry, verify_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.identity import MeshCA, Role
from p2pstore.wire import encode_entry

CAP = "p2ps:read:" + "a" * 52 + ":" + "b" * 52


def main(names: int) -> dict[str, float]:
    now = datetime.now(UTC)
    ca = MeshCA.create_in_memory(mesh_name="bench", now=now - timedelta(days=1))
    trust = ca.trust_anchor()
    signer = ca.issue_in_memory(
        datacenter="gw", region="FR", role=Role.CLIENT, now=now - timedelta(hours=1), tenant="t1"
    )
    keys = BucketKeys(os.urandom(32), "photos")
    at = int(now.timestamp() * 1000)

    start = time.perf_counter()
    entries = []
    for i in range(names):
        payload = EntryPayload(f"2026/{i % 100:02d}/img-{i:08d}", CAP, 123_456, at)
        entries.append(
            sign_entry(
                signer,
                bucket_token=keys.bucket_token,
                name=keys.name_token(payload.name),
                op=Op.PUT,
                timestamp=at - i,
                payload=keys.seal(payload, op=int(Op.PUT), salt=os.urandom(16)),
            )
        )
    sign_s = time.perf_counter() - start

    start = time.perf_counter()
    verified = [verify_entry(e, now.timestamp(), trust=trust) for e in entries]
    verify_s = time.perf_counter() - start

    start = time.perf_counter()
    index = BucketIndex(verified[0].bucket)
    index.merge(verified)
    merge_s = time.perf_counter() - start

    start = time.perf_counter()
    listed = []
    for view in index.live(now.timestamp()):
        payload = keys.open(view.payload, name_token=view.name, op=int(view.op))
        if payload.name.startswith("2026/07/"):
            listed.append(payload.name)
    listed.sort()
    list_s = time.perf_counter() - start
    assert len(listed) == len(range(7, names, 100))

    return {
        "names": names,
        "entry_bytes": len(encode_entry(entries[0])),
        "sign_per_s": names / sign_s,
        "verify_per_s": names / verify_s,
        "merge_per_s": names / merge_s,
        "list_prefix_s": list_s,
        "cold_list_s": verify_s + merge_s + list_s,
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    for field, value in main(count).items():
        print(f"{field:>14}: {value:,.2f}" if isinstance(value, float) else f"{field:>14}: {value}")
