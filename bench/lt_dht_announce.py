#!/usr/bin/python3
"""libtorrent seeding many torrents with its DHT joined only to the
benchmark's simulated DHT on loopback: how many distinct info hashes it
announces in a given time (the simulator counts them; see
crates/bench/src/bin/dht_announce).

The session binds one loopback address, has LSD, UPnP and NAT-PMP off and
no DHT bootstrap routers (dht_bootstrap_nodes = ""); the only DHT nodes it
knows are the simulator's, added with add_dht_node. Torrents are one-piece
synthetic ones (sample-title-NNNNNN.mp4) in seed mode, not auto-managed, so
every one is an active seed and no queue or active_dht_limit keeps it from
announcing. Their files do not exist; nothing connects to them.

--print-settings prints libtorrent's DHT announce settings under its
default and high_performance_seed() presets, as JSON, and exits.
"""
import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lt_common  # noqa: E402

DHT_KEYS = [
    "active_dht_limit",
    "active_seeds",
    "active_limit",
    "dht_announce_interval",
    "dht_upload_rate_limit",
    "dht_search_branching",
    "dht_block_ratelimit",
    "dht_max_torrents",
]
PIECE = 16384


def preset(name):
    s = lt.default_settings()
    if name == "high_performance_seed":
        s.update(lt.high_performance_seed())
    return {k: s.get(k) for k in DHT_KEYS}


def torrent(i):
    name = f"sample-title-{i:06}.mp4".encode()
    pieces = hashlib.sha1(b"\0" * PIECE).digest()
    info = (
        b"d6:lengthi%de4:name%d:%s12:piece lengthi%de6:pieces20:%se"
        % (PIECE, len(name), name, PIECE, pieces)
    )
    return lt.torrent_info(b"d4:info" + info + b"e")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.9.2")
    ap.add_argument("--bootstrap", default="", help="ip:port,... of simulated DHT nodes (loopback)")
    ap.add_argument("--torrents", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--profile", default="default", choices=["default", "high_performance_seed"])
    ap.add_argument("--print-settings", action="store_true")
    a = ap.parse_args()
    if a.print_settings:
        print(json.dumps({"ok": True, "default": preset("default"),
                          "high_performance_seed": preset("high_performance_seed")}))
        return
    nodes = []
    for hp in filter(None, a.bootstrap.split(",")):
        host, port = hp.rsplit(":", 1)
        if not host.startswith("127."):
            ap.error(f"refusing DHT node {hp}: loopback (127.0.0.0/8) only")
        nodes.append((host, int(port)))

    s = lt_common.settings(
        a.bind,
        a.profile,
        alert_queue_size=100_000,
        active_seeds=-1,
        active_limit=-1,
    )
    # The DHT on, joined only through the simulator's loopback nodes. All
    # of them share a few /24s, which libtorrent's IP restrictions would
    # otherwise refuse (as in tests/clients/lt_dht_node.py).
    s.update({
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
    })
    started = time.time()
    ses = lt.session(s)
    for n in nodes:
        ses.add_dht_node(n)
    save_path = os.path.join("/nonexistent-warnseed-bench", "dht")
    added = failed = 0
    for i in range(a.torrents):
        atp = lt.add_torrent_params()
        atp.ti = torrent(i)
        atp.save_path = save_path
        atp.flags = lt.torrent_flags.seed_mode
        ses.async_add_torrent(atp)
        if i % 1000 == 999:
            for al in ses.pop_alerts():
                if isinstance(al, lt.add_torrent_alert):
                    if al.error.value():
                        failed += 1
                    else:
                        added += 1
    deadline = time.time() + 60
    while added + failed < a.torrents and time.time() < deadline:
        ses.wait_for_alert(200)
        for al in ses.pop_alerts():
            if isinstance(al, lt.add_torrent_alert):
                if al.error.value():
                    failed += 1
                else:
                    added += 1
    add_seconds = time.time() - started
    print(f"ready torrents={added}", flush=True)
    end = time.time() + a.seconds
    while time.time() < end:
        ses.wait_for_alert(500)
        ses.pop_alerts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        st = ses.status()
    applied = ses.get_settings()
    print(json.dumps({
        "ok": failed == 0,
        "profile": a.profile,
        "torrents": added,
        "failed": failed,
        "add_seconds": add_seconds,
        "seconds": time.time() - started,
        "dht_nodes": st.dht_nodes,
        "settings": {k: applied.get(k) for k in DHT_KEYS},
    }), flush=True)


if __name__ == "__main__":
    main()
