#!/usr/bin/python3
"""A libtorrent 2.0 seeder for the serving benchmark.

Adds every .torrent in --torrents with save_path --files, checks the files
(full hash check, so measurements start from steady-state seeding, not from
seed mode's verify-on-first-request), then prints one JSON line
{"ok": true, "port": P, ...} and seeds until SIGTERM or SIGINT.

Torrents are not auto-managed (every one is an active seed) and the unchoke
slot limit is lifted (-1) so all downloads are served at once, as warnseed
does; both are printed in the ready line.
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
    ap.add_argument("--files", required=True, help="directory holding the files")
    ap.add_argument("--bind", default="127.0.0.3")
    ap.add_argument("--profile", default="default", choices=["default", "high_performance_seed"])
    ap.add_argument("--unchoke-slots", type=int, default=-1, help="-1: unlimited")
    ap.add_argument("--timeout", type=float, default=300, help="longest the check may take")
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    s = lt_common.settings(a.bind, a.profile, unchoke_slots_limit=a.unchoke_slots)
    ses = lt.session(s)
    handles = []
    for path in sorted(glob.glob(os.path.join(a.torrents, "*.torrent"))):
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(path)
        atp.save_path = a.files
        atp.flags = 0  # not auto_managed, not paused, not seed_mode: check first
        handles.append(ses.add_torrent(atp))
    if not handles:
        print(json.dumps({"ok": False, "error": f"no .torrent files in {a.torrents}"}))
        return 1
    start = time.time()
    while True:
        states = [h.status() for h in handles]
        if all(st.is_seeding for st in states):
            break
        for al in ses.pop_alerts():
            if isinstance(al, (lt.torrent_error_alert, lt.file_error_alert)):
                print(json.dumps({"ok": False, "error": al.message()}))
                return 1
        if time.time() - start > a.timeout or stop:
            bad = [(st.name, str(st.state), st.progress) for st in states if not st.is_seeding]
            print(json.dumps({"ok": False, "error": f"not seeding: {bad[:3]}"}))
            return 1
        time.sleep(0.05)
    check_seconds = time.time() - start
    applied = ses.get_settings()
    print(json.dumps({
        "ok": True,
        "port": ses.listen_port(),
        "torrents": len(handles),
        "check_seconds": round(check_seconds, 3),
        "profile": a.profile,
        "unchoke_slots_limit": applied["unchoke_slots_limit"],
        "libtorrent": lt.__version__,
        "pid": os.getpid(),
    }))
    sys.stdout.flush()
    while not stop:
        ses.wait_for_alert(200)
        ses.pop_alerts()
    uploaded = sum(h.status().all_time_upload for h in handles)
    print(json.dumps({"ok": True, "stopped": True, "uploaded": uploaded}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
