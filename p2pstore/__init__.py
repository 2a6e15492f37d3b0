"""p2pstore: a sovereign peer-to-peer storage mesh for regional datacenters."""

__version__ = "0.1.0"
