"""The simulator: the core's state machines driven by virtual time and a seeded RNG, no trio, no
I/O, so thousands of peers run on one core and the same seed gives the same trace."""

from p2pstore.sim.dht_driver import SimulatedDht

__all__ = ["SimulatedDht"]
