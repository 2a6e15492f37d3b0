"""Test meshes shared by the tests, the benchmarks and the conformance check: the transports
(:mod:`~p2pstore.testing.net_harness`), a DHT mesh (:mod:`~p2pstore.testing.dht_mesh`) and a
storage mesh of nodes with stewards and a client (:mod:`~p2pstore.testing.storage_mesh`).
Not imported by the node or the CLI."""
