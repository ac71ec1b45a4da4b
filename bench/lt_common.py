"""Settings shared by the benchmark's libtorrent sessions.

Every session is kept on loopback: DHT, LSD, UPnP and NAT-PMP off, no DHT
bootstrap nodes, no trackers. uTP and protocol encryption are off because
warnseed speaks plain TCP only; leaving them on makes libtorrent try them
first and fall back after a timeout.
"""
import libtorrent as lt

SAFE = {
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "dht_bootstrap_nodes": "",
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "out_enc_policy": int(lt.enc_policy.disabled),
    "in_enc_policy": int(lt.enc_policy.disabled),
}


def settings(bind, profile="default", **extra):
    """A settings dict for a session bound to the loopback address `bind`.

    profile "default" starts from libtorrent's defaults; "high_performance_seed"
    from lt.high_performance_seed(). The loopback-only settings above always
    win.
    """
    if not bind.startswith("127."):
        raise SystemExit(f"refusing to bind to {bind}: loopback (127.0.0.0/8) only")
    s = {}
    if profile == "high_performance_seed":
        s.update(lt.high_performance_seed())
    elif profile != "default":
        raise SystemExit(f"unknown profile {profile}")
    s.update(extra)
    s.update(SAFE)
    s["listen_interfaces"] = f"{bind}:0"
    s["outgoing_interfaces"] = bind
    s["alert_mask"] = lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
    return s


def cpu_seconds():
    """utime + stime of this process, every thread, from /proc/self/stat."""
    import os

    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
