"""Both stores, driven side by side by hypothesis, agree with a dict at every step."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import IntegrityError, QuotaExceeded
from p2pstore.store import MAX_PAGE, DiskFragmentStore, FragmentNotFound, MemoryFragmentStore

QUOTA = 20_000
seeds = st.integers(0, 30)
sizes = st.integers(1, 4000)


def make_fragment(seed: int, size: int) -> tuple[bytes, bytes]:
    data = random.Random(seed * 100_003 + size).randbytes(size)
    return fragment_id(data), data


def corrupt_on_disk(store: DiskFragmentStore, fid: bytes) -> None:
    path = store.data_dir / "fragments" / fid.hex()[:2] / fid.hex()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x80
    path.write_bytes(bytes(data))


class StoresAgreeWithAModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.disk = DiskFragmentStore(Path(self._tmp.name), QUOTA)
        self.memory = MemoryFragmentStore(QUOTA)
        self.stores = (self.memory, self.disk)
        self.model: dict[bytes, bytes] = {}
        self.corrupted: set[bytes] = set()
        self.cursor: bytes | None = None

    def teardown(self) -> None:
        self.disk.close()
        self._tmp.cleanup()

    @rule(seed=seeds, size=sizes)
    def put(self, seed, size):
        fid, data = make_fragment(seed, size)
        fits = fid in self.model or sum(map(len, self.model.values())) + size <= QUOTA
        for store in self.stores:
            if fits:
                store.put(fid, data)
            else:
                with pytest.raises(QuotaExceeded):
                    store.put(fid, data)
        if fits:
            self.model[fid] = data

    @rule(seed=seeds, size=sizes)
    def put_with_a_wrong_id(self, seed, size):
        fid, data = make_fragment(seed, size)
        for store in self.stores:
            with pytest.raises(IntegrityError):
                store.put(fid, data + b"!")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data):
        fid = data.draw(st.sampled_from(sorted(self.model)))
        for store in self.stores:
            if fid in self.corrupted:
                with pytest.raises(IntegrityError):
                    store.get(fid)
            else:
                assert store.get(fid) == self.model[fid]
        if fid in self.corrupted:
            self._forget(fid)

    @rule(seed=seeds, size=sizes)
    def get_absent(self, seed, size):
        fid, _ = make_fragment(seed, size)
        if fid in self.model:
            return
        for store in self.stores:
            with pytest.raises(FragmentNotFound):
                store.get(fid)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        fid = data.draw(st.sampled_from(sorted(self.model)))
        for store in self.stores:
            assert store.delete(fid) is True
            assert store.delete(fid) is False
        self._forget(fid)

    @precondition(lambda self: set(self.model) - self.corrupted)
    @rule(data=st.data())
    def corrupt(self, data):
        fid = data.draw(st.sampled_from(sorted(set(self.model) - self.corrupted)))
        self.memory.corrupt(fid)
        corrupt_on_disk(self.disk, fid)
        self.corrupted.add(fid)

    @rule(max_bytes=st.integers(1, 10_000))
    def scrub(self, max_bytes):
        reports = [store.scrub(max_bytes, self.cursor) for store in self.stores]
        assert reports[0] == reports[1]
        for fid in reports[0].corrupt_ids:
            assert fid in self.corrupted
            self._forget(fid)
        self.cursor = reports[0].next_cursor

    def _forget(self, fid: bytes) -> None:
        del self.model[fid]
        self.corrupted.discard(fid)

    @invariant()
    def listings_and_usage_agree(self):
        expected = sorted(self.model)
        for store in self.stores:
            assert store.ids(None, MAX_PAGE) == expected
            usage = store.usage()
            assert usage.fragments == len(self.model)
            assert usage.bytes_used == sum(map(len, self.model.values())) <= QUOTA
        assert self.memory.usage() == self.disk.usage()


StoresAgreeWithAModel.TestCase.settings = settings(
    max_examples=10, stateful_step_count=20, deadline=None
)
test_stores_agree_with_a_model = StoresAgreeWithAModel.TestCase
