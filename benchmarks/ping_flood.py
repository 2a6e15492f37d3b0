"""One flood alone (the ping flood unless ``--flood`` names another of ``flood_peers.py``)
against one node process: an honest peer's latency and the node's CPU, in alternating windows
without and with the flood, for profiling what the node does per request.

Why beside ``floods.py``: that harness measures every flood on a mesh with puts and gets, a
minute per figure; finding where a node spends its time under one flood needs many short
windows and nothing else running.  One node (no mesh), the honest prober and the attacker of
``flood_peers.py`` (from 127.0.0.2), windows alternating quiet/flood ``--rounds`` times.
``--profile DIR`` runs the node under cProfile (``profiling/sitecustomize.py``) and leaves its
``PID.prof`` in DIR (its latencies then mean little: read the profile only).

Run: ``python benchmarks/ping_flood.py --rounds 3 --window 12 [--flood handshake]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flood_report import percentile, proc_cpu

from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import LOCAL_RULES, create_mesh
from p2pstore.identity import Role

PEERS = Path(__file__).with_name("flood_peers.py")


def wait_listening(address: str, timeout: float = 60.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"no node listening at {address}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=12.0, help="seconds per window")
    parser.add_argument("--profile", type=Path, help="directory for the node's cProfile dump")
    parser.add_argument("--flood", default="ping", choices=("ping", "handshake", "findnode"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-pingflood-") as temp:
        directory = Path(temp)
        authority, (target,), _client = create_mesh(directory, 1, 1, ("FR-GES",))
        write_local_node_config(
            target.directory, listen=target.address, bootstrap_peers=(), rules=LOCAL_RULES
        )
        issued = {}
        for name in ("prober", "attacker"):
            (directory / name).mkdir()
            issued[name] = authority.issue(
                directory / name, name, datacenter=name, region="FR-GES", role=Role.CLIENT,
                now=authority.certificate.not_valid_before_utc,
            )  # fmt: skip
        env = dict(os.environ)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            env["P2PSTORE_BENCH_PROFILE"] = str(args.profile.resolve())
            profiling = str(Path(__file__).with_name("profiling"))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [profiling, env.get("PYTHONPATH")]))
        ca = str(directory / "ca" / "ca.crt")
        node_log = (directory / "node.log").open("wb")
        node = subprocess.Popen(  # our own interpreter, a list argv, no shell
            [sys.executable, str(PEERS), "node", "--config", str(target.directory / "node.toml")],
            stdout=node_log, stderr=node_log, env=env,
        )  # fmt: skip
        processes = [node]
        try:
            wait_listening(target.address)
            total = args.rounds * 2 * args.window + 10
            prober_out = (directory / "probes.jsonl").open("wb")
            prober = subprocess.Popen(
                [sys.executable, str(PEERS), "probe", "--target", target.address,
                 "--node-id", target.node_id.hex(),
                 "--key", str(issued["prober"].key_path),
                 "--cert", str(issued["prober"].certificate_path),
                 "--ca", ca, "--duration", str(total)],
                stdout=prober_out,
            )  # fmt: skip
            processes.append(prober)
            time.sleep(3)  # its session up
            windows: list[tuple[str, float, float, float]] = []
            for _ in range(args.rounds):
                for flooded in (False, True):
                    cpu0, began = proc_cpu(node.pid) or 0.0, time.time()
                    attacker = None
                    if flooded:
                        attacker = subprocess.Popen(
                            [sys.executable, str(PEERS), "attack", args.flood,
                             "--target", target.address,
                             "--key", str(issued["attacker"].key_path),
                             "--cert", str(issued["attacker"].certificate_path),
                             "--ca", ca, "--duration", str(args.window),
                             "--source", "127.0.0.2"],
                            stdout=subprocess.PIPE,
                        )  # fmt: skip
                        processes.append(attacker)
                    time.sleep(args.window)
                    if attacker is not None:
                        attacker.terminate()
                        out, _ = attacker.communicate(timeout=10)
                        print("attacker:", out.decode().strip().splitlines()[-1:])
                    cpu = (proc_cpu(node.pid) or 0.0) - cpu0
                    windows.append(("flood" if flooded else "quiet", began, time.time(), cpu))
                    time.sleep(1)
            prober.terminate()
            prober.wait(10)
            probes = [
                json.loads(line)
                for line in (directory / "probes.jsonl").read_text().splitlines()
                if line.startswith("{")
            ]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
        for kind, began, ended, cpu in windows:
            timed = [
                (p["ms"] if p["ms"] is not None else 5000.0, p["t"] - began, p["kind"])
                for p in probes
                if p.get("kind") in ("ping", "find_node") and began <= p["t"] < ended
            ]
            connects = [
                p["ms"] if p["ms"] is not None else 10_000.0
                for p in probes
                if p.get("kind") == "connect" and began <= p["t"] < ended
            ]
            ms = [m for m, _at, _kind in timed]
            worst = sorted(timed, reverse=True)[:4]
            print("  worst:", ", ".join(f"{m:.0f} ms at {at:.1f}s ({k})" for m, at, k in worst))
            print(
                f"{kind:5} n={len(ms):4} p50 {percentile(ms, 0.5):7.2f} ms  p99 "
                f"{percentile(ms, 0.99):7.2f} ms  max {max(ms, default=0):7.1f} ms  "
                f"node CPU {cpu:5.2f} s; new connection p50 {percentile(connects, 0.5):6.1f} "
                f"ms, max {max(connects, default=0):6.1f} ms"
            )


if __name__ == "__main__":
    main()
