#!/usr/bin/python3
"""The serving benchmark's downloader: one fresh libtorrent 2.0 session that
downloads every .torrent in --torrents at once from one known peer, then
exits with one JSON line: wall seconds (from the first add to the last
torrent seeding, i.e. every piece received and hash-checked), bytes, and this
process's own CPU seconds.

Trackers in the .torrent files are dropped; the only peer is --peer.
"""
import argparse
import glob
import json
import os
import sys
import time

import libtorrent as lt

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lt_common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrents", required=True, help="directory of .torrent files")
    ap.add_argument("--peer", required=True, help="ip:port of the seeder")
    ap.add_argument("--bind", default="127.0.0.2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    ip, port = a.peer.rsplit(":", 1)
    if not ip.startswith("127."):
        raise SystemExit("loopback peers only")
    peer = (ip, int(port))

    ses = lt.session(lt_common.settings(a.bind))
    paths = sorted(glob.glob(os.path.join(a.torrents, "*.torrent")))
    tis = [lt.torrent_info(p) for p in paths]
    total = sum(ti.total_size() for ti in tis)
    cpu0 = lt_common.cpu_seconds()
    start = time.time()
    handles = []
    for ti in tis:
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.trackers = []
        atp.save_path = a.out
        atp.flags = 0  # not auto_managed: every download runs at once
        h = ses.add_torrent(atp)
        h.connect_peer(peer)
        handles.append(h)
    last_connect = time.time()
    done_at = {}
    hash_failures = 0
    while True:
        now = time.time()
        for i, h in enumerate(handles):
            if i not in done_at and h.status().is_seeding:
                done_at[i] = now - start
        if len(done_at) == len(handles):
            break
        if now - start > a.timeout:
            pending = [(str(h.status().state), round(h.status().progress, 3)) for i, h in enumerate(handles) if i not in done_at]
            print(json.dumps({"ok": False, "error": f"timeout; unfinished {pending[:3]}"}))
            return 1
        if now - last_connect > 2:
            for i, h in enumerate(handles):
                if i not in done_at and h.status().num_peers == 0:
                    h.connect_peer(peer)
            last_connect = now
        for al in ses.pop_alerts():
            if isinstance(al, (lt.torrent_error_alert, lt.file_error_alert)):
                print(json.dumps({"ok": False, "error": al.message()}))
                return 1
            if isinstance(al, lt.hash_failed_alert):
                hash_failures += 1
        time.sleep(0.02)
    seconds = time.time() - start
    cpu = lt_common.cpu_seconds() - cpu0
    pieces = sum(h.status().num_pieces for h in handles)
    print(json.dumps({
        "ok": True,
        "seconds": seconds,
        "bytes": total,
        "torrents": len(handles),
        "first_done": min(done_at.values()),
        "last_done": max(done_at.values()),
        "downloader_cpu_seconds": cpu,
        "pieces": pieces,
        "hash_failures": hash_failures,
    }))
    sys.stdout.flush()
    # Closing the session closes the connections; the seeders see the
    # peers leave and register the sessions.
    del handles
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
