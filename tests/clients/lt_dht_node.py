#!/usr/bin/python3
"""A libtorrent 2.0 session that is only a DHT node, on one loopback
address, bootstrapped into the given local nodes and nothing else (no
public routers, no LSD, UPnP or NAT-PMP).

Used by warnseed's DHT interoperability test. Prints "ready <port>" once
listening, then runs until killed.
"""
import argparse
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bootstrap", default="", help="host:port,... of local DHT nodes")
    a = ap.parse_args()
    settings = {
        "listen_interfaces": f"[{a.bind}]:{a.port}" if ":" in a.bind else f"{a.bind}:{a.port}",
        "outgoing_interfaces": a.bind,
        "enable_dht": True,
        "dht_bootstrap_nodes": a.bootstrap,
        # Every node of the test shares 127.0.0.0/24.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
    }
    ses = lt.session(settings)
    deadline = time.time() + 20
    while time.time() < deadline:
        ses.wait_for_alert(500)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.listen_succeeded_alert):
                print(f"ready {a.port}", flush=True)
                deadline = 0
            elif isinstance(alert, lt.listen_failed_alert):
                print(f"failed {alert.message()}", flush=True)
                sys.exit(1)
    while True:
        ses.wait_for_alert(1000)
        ses.pop_alerts()


if __name__ == "__main__":
    main()
