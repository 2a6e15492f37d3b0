"""The simulator: the core's state machines driven by virtual time and a seeded RNG, no trio,
no I/O, so thousands of peers run on one core and the same seed gives the same trace.

Entry points: :func:`load_scenario` / :func:`scenario_from_dict` build a :class:`Scenario`;
:class:`Simulation` runs it (``rows``, ``outcome()``, ``digest()``); :func:`run_scenario`
writes a run's CSV, JSON and plots; :mod:`p2pstore.sim.sweep` runs grids of them.
"""

from p2pstore.sim.dht_driver import SimulatedDht
from p2pstore.sim.engine import Simulation
from p2pstore.sim.metrics import Outcome
from p2pstore.sim.runner import run_scenario, run_scenario_file
from p2pstore.sim.scenario import Scenario
from p2pstore.sim.scenario_file import load_scenario, scenario_from_dict

__all__ = [
    "Outcome",
    "Scenario",
    "SimulatedDht",
    "Simulation",
    "load_scenario",
    "run_scenario",
    "run_scenario_file",
    "scenario_from_dict",
]
