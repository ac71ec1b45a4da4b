#!/usr/bin/python3
"""A libtorrent 2.0 seeder for the metadata service benchmark.

Adds every .torrent in --torrents in seed mode. The benchmark only fetches
metadata (BEP 9), which libtorrent serves from the info dictionary it keeps
in memory, so no piece is ever read; each file is still created, sparse and
of the right length, because libtorrent leaves a seed-mode torrent whose
files are missing in the downloading state. Prints one JSON line {"ok": true, "port": P, ...} once every torrent
is seeding, then serves until SIGTERM or SIGINT.

Settings, on top of the loopback-only ones in lt_common.py:
- connections_limit is raised to 20,000, warnseed's max_connections (the
  default, 200, would refuse connections under load that warnseed accepts);
- allow_multiple_connections_per_ip is on: the generator's source addresses
  are shared by many fetches, as warnseed allows (16 per address);
- listen_queue_size is 1,024, the backlog warnseed listens with. The
  default, 5, overflows at a few hundred connections per second, and every
  dropped SYN costs the fetch a 1 s retransmission.
"""
import argparse
import glob
import json
import os
import signal
import sys
import time

import libtorrent as lt

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lt_common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrents", required=True, help="directory of .torrent files")
    ap.add_argument("--bind", default="127.0.0.3")
    ap.add_argument("--profile", default="default", choices=["default", "high_performance_seed"])
    ap.add_argument("--connections-limit", type=int, default=20000)
    ap.add_argument("--listen-queue", type=int, default=1024,
                    help="listen backlog (libtorrent's default is 5)")
    ap.add_argument("--timeout", type=float, default=120, help="longest adding may take")
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    s = lt_common.settings(
        a.bind,
        a.profile,
        connections_limit=a.connections_limit,
        allow_multiple_connections_per_ip=True,
        listen_queue_size=a.listen_queue,
    )
    ses = lt.session(s)
    files = os.path.join(os.path.abspath(a.torrents), "files")
    os.makedirs(files, exist_ok=True)
    handles = []
    for path in sorted(glob.glob(os.path.join(a.torrents, "*.torrent"))):
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(path)
        # Sparse: no data blocks are written.
        with open(os.path.join(files, atp.ti.name()), "wb") as f:
            f.truncate(atp.ti.total_size())
        atp.save_path = files
        atp.flags = lt.torrent_flags.seed_mode  # not auto-managed, not paused
        handles.append(ses.add_torrent(atp))
    if not handles:
        print(json.dumps({"ok": False, "error": f"no .torrent files in {a.torrents}"}))
        return 1
    start = time.time()
    while True:
        states = [h.status() for h in handles]
        if all(st.is_seeding for st in states):
            break
        if time.time() - start > a.timeout or stop:
            bad = [(st.name, str(st.state)) for st in states if not st.is_seeding]
            print(json.dumps({"ok": False, "error": f"not seeding: {bad[:3]}"}))
            return 1
        ses.pop_alerts()
        time.sleep(0.05)
    applied = ses.get_settings()
    print(json.dumps({
        "ok": True,
        "port": ses.listen_port(),
        "torrents": len(handles),
        "profile": a.profile,
        "connections_limit": applied["connections_limit"],
        "allow_multiple_connections_per_ip": applied["allow_multiple_connections_per_ip"],
        "listen_queue_size": applied["listen_queue_size"],
        "libtorrent": lt.__version__,
        "pid": os.getpid(),
    }))
    sys.stdout.flush()
    errors = 0
    while not stop:
        ses.wait_for_alert(200)
        for al in ses.pop_alerts():
            if isinstance(al, (lt.torrent_error_alert, lt.file_error_alert)):
                errors += 1
                if errors <= 5:
                    print(al.message(), file=sys.stderr)
    print(json.dumps({"ok": True, "stopped": True, "torrent_errors": errors}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
