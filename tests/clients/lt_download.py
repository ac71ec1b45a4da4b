#!/usr/bin/python3
"""Download one torrent with libtorrent 2.0 (python3-libtorrent) from one
known peer, with DHT, LSD, UPnP and NAT-PMP off, then exit. With
--dht-bootstrap the DHT is on, joined through the given local nodes only.

Used by warnseed's interoperability tests. Prints one JSON line:
{"ok": true, "path": ..., "seconds": ..., "peer_id": ...} or {"ok": false, "error": ...}.
"""
import argparse
import json
import os
import sys
import time

import libtorrent as lt


def collect_local_port(alert, ports):
    # peer_log: "*** LOCAL ENDPOINT [ e: 127.0.0.2:44229 ]" names the source
    # port of each outgoing connection, which the seed sees as remote port.
    if isinstance(alert, lt.peer_log_alert):
        m = alert.message()
        i = m.find("LOCAL ENDPOINT [ e: ")
        if i >= 0:
            ep = m[i + len("LOCAL ENDPOINT [ e: "):].split(" ")[0]
            ports.add(int(ep.rsplit(":", 1)[1]))


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--torrent")
    src.add_argument("--magnet")
    ap.add_argument("--peer", action="append", default=[], help="ip:port to connect to")
    ap.add_argument("--bind", required=True, help="loopback address to use, e.g. 127.0.0.2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--trackers", action="store_true", help="keep trackers from the torrent")
    ap.add_argument("--rate-limit", type=int, default=0, help="download bytes/s (0: none)")
    ap.add_argument(
        "--dht-bootstrap",
        default="",
        help="host:port,... of local DHT nodes: turns the DHT on, bootstrapped into these only",
    )
    ap.add_argument(
        "--encryption",
        choices=["default", "forced-rc4", "disabled"],
        default="default",
        help="default: libtorrent's own (try MSE, accept plaintext); forced-rc4: "
        "like 'require encryption' in qBittorrent; disabled: plain BitTorrent only",
    )
    a = ap.parse_args()

    settings = {
        "listen_interfaces": f"[{a.bind}]:0" if ":" in a.bind else f"{a.bind}:0",
        "outgoing_interfaces": a.bind,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Tests restart seeds; do not wait a minute to try one again.
        "min_reconnect_time": 1,
        # warnseed speaks TCP only in this version; libtorrent would try uTP
        # first and fall back to TCP after a 3 s timeout.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "dht_bootstrap_nodes": "",
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.peer_log_notification,
    }
    if a.dht_bootstrap:
        settings["enable_dht"] = True
        settings["dht_bootstrap_nodes"] = a.dht_bootstrap
        # Every node of the test shares 127.0.0.0/24.
        settings["dht_restrict_routing_ips"] = False
        settings["dht_restrict_search_ips"] = False
        settings["dht_ignore_dark_internet"] = False
    if a.rate_limit:
        settings["download_rate_limit"] = a.rate_limit
        # Loopback counts as a local network, which libtorrent would exempt.
        settings["ignore_limits_on_local_network"] = False
    if a.encryption == "forced-rc4":
        settings["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["allowed_enc_level"] = int(lt.enc_level.pe_rc4)
    elif a.encryption == "disabled":
        settings["out_enc_policy"] = int(lt.enc_policy.pe_disabled)
        settings["in_enc_policy"] = int(lt.enc_policy.pe_disabled)
    ses = lt.session(settings)
    if a.torrent:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(a.torrent)
    else:
        atp = lt.parse_magnet_uri(a.magnet)
    if not a.trackers:
        atp.trackers = []
        if atp.ti is not None:
            # torrent_info carries its own tracker list; keep none of it.
            atp.ti.clear_trackers() if hasattr(atp.ti, "clear_trackers") else None
    atp.save_path = a.out
    h = ses.add_torrent(atp)
    for p in a.peer:
        ip, port = p.rsplit(":", 1)
        h.connect_peer((ip.strip("[]"), int(port)))

    start = time.time()
    last_connect = start
    # Local ports of our connections to the seed, so the test can match the
    # ledger's remote_port exactly.
    local_ports = set()
    while True:
        st = h.status()
        if st.is_seeding:
            break
        if time.time() - start > a.timeout:
            print(json.dumps({"ok": False, "error": f"timeout in state {st.state} progress {st.progress}"}))
            return 1
        if time.time() - last_connect > 5 and st.num_peers == 0:
            for p in a.peer:
                ip, port = p.rsplit(":", 1)
                h.connect_peer((ip.strip("[]"), int(port)))
            last_connect = time.time()
        for al in ses.pop_alerts():
            collect_local_port(al, local_ports)
            if isinstance(al, lt.torrent_error_alert):
                print(json.dumps({"ok": False, "error": al.message()}))
                return 1
        time.sleep(0.1)
    secs = time.time() - start
    ti = h.torrent_file()
    path = os.path.join(a.out, ti.files().file_path(0))
    # Give the HAVE for the last piece time to reach the seed before we leave.
    time.sleep(1.0)
    for al in ses.pop_alerts():
        collect_local_port(al, local_ports)
    ses.remove_torrent(h)
    time.sleep(0.5)
    print(json.dumps({"ok": True, "path": path, "seconds": secs, "local_ports": sorted(local_ports)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
