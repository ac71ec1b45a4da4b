#!/usr/bin/python3
"""Capacity of one libtorrent 2.0 session: how many seeding torrents it holds
and what each costs in resident memory.

Adds synthetic single-file torrents, built exactly as warnseed builds its
decoys (same titles, same deterministic size mix, same piece-length rule, piece
hashes of `payload || zeros`), so each info hash equals the warnseed decoy's.
Torrents are added in seed mode with a save_path whose files do not exist and
with no peers, trackers or DHT, so libtorrent never touches the disk: what is
measured is the in-memory cost of a torrent it is ready to serve.

Stops after --seconds, after --titles torrents, or when RSS grew by
--max-rss-mib (the machine is shared), whichever comes first. Prints one JSON
line.

Run by `cargo run --release -p warnseed-bench --bin capacity`; can be run by
hand:  /usr/bin/python3 bench/lt_capacity.py --payload FILE --titles 100000
"""
import argparse
import hashlib
import json
import os
import sys
import time

import libtorrent as lt

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lt_common  # noqa: E402

M64 = (1 << 64) - 1
MIB = 1 << 20
GIB = 1 << 30

# Same constants and arithmetic as crates/bench/src/lib.rs.
SIZE_MIX = [
    (30, 100 * MIB, 700 * MIB),
    (35, 700 * MIB, 1536 * MIB),
    (25, 1536 * MIB, 2560 * MIB),
    (10, 2560 * MIB, 4 * GIB),
]
EXT = ["mp4", "mkv", "avi"]
# crates/bittorrent/src/metainfo.rs piece_length_for.
THRESHOLDS = [
    2_684_355, 10_737_418, 42_949_673, 171_798_692, 687_194_767,
    2_748_779_069, 10_995_116_278, 43_980_465_111, 175_921_860_444,
]
MIN_PIECE = 16 * 1024
MAX_PIECE = 8 * 1024 * 1024


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def size_for(seed, i):
    state = (seed + ((i + 1) * 0x9E3779B97F4A7C15)) & M64
    pick = mix64(state) % 100
    within = mix64(state ^ 0xD1B54A32D192ED03)
    acc = 0
    for percent, lo, hi in SIZE_MIX:
        acc += percent
        if pick < acc:
            return lo + within % (hi - lo + 1)
    raise AssertionError("mix adds up to 100")


def title(i):
    return "sample-title-%06d.%s" % (i, EXT[i % 3])


def piece_length_for(total):
    length = MIN_PIECE
    for t in THRESHOLDS:
        if total <= t:
            return length
        length *= 2
    return MAX_PIECE


class Layout:
    """Piece hashes of `payload || zeros` decoys, shared per piece length."""

    # SHA-1 states after every ZSTEP zero bytes, so hashing a run of zeros
    # of any length costs at most ZSTEP bytes of work.
    ZSTEP = 4096

    def __init__(self, payload):
        self.payload = payload
        self.zeros = bytes(MAX_PIECE)
        self.per_length = {}
        self.zero_states = [hashlib.sha1()]
        chunk = bytes(self.ZSTEP)
        for _ in range(MAX_PIECE // self.ZSTEP):
            h = self.zero_states[-1].copy()
            h.update(chunk)
            self.zero_states.append(h)

    def zero_hash(self, n):
        h = self.zero_states[n // self.ZSTEP].copy()
        h.update(memoryview(self.zeros)[: n % self.ZSTEP])
        return h.digest()

    def _shared(self, pl):
        s = self.per_length.get(pl)
        if s is None:
            p = self.payload
            full = len(p) // pl
            head = b"".join(hashlib.sha1(p[i * pl:(i + 1) * pl]).digest() for i in range(full))
            # The piece holding the payload's end, when it is not the last.
            boundary = self.piece(full * pl + pl, pl, full) if len(p) % pl else None
            s = (full, head, boundary, hashlib.sha1(self.zeros[:pl]).digest())
            self.per_length[pl] = s
        return s

    def piece(self, size, pl, i):
        """Hash of piece i of a decoy of `size` bytes, from its bytes."""
        start = i * pl
        end = min(size, start + pl)
        if start >= len(self.payload):
            return self.zero_hash(end - start)
        h = hashlib.sha1()
        p = self.payload
        if start < len(p):
            h.update(p[start:min(end, len(p))])
        zero_from = max(start, len(p))
        if end > zero_from:
            h.update(memoryview(self.zeros)[: end - zero_from])
        return h.digest()

    def pieces(self, size):
        pl = piece_length_for(size)
        n = max(1, -(-size // pl))
        full, head, boundary, zero = self._shared(pl)
        # Pieces wholly inside the payload, then the boundary piece, then
        # whole zero pieces, then the last (maybe short) piece.
        if n <= full:
            return pl, head[: 20 * (n - 1)] + self.piece(size, pl, n - 1)
        out = [head]
        i = full
        if i < n - 1 and boundary is not None:
            out.append(boundary)
            i += 1
        if i < n - 1:
            out.append(zero * (n - 1 - i))
        out.append(self.piece(size, pl, n - 1))
        return pl, b"".join(out)

    def info(self, name, size):
        pl, pieces = self.pieces(size)
        nb = name.encode()
        return b"".join([
            b"d6:lengthi%de4:name%d:" % (size, len(nb)), nb,
            b"12:piece lengthi%de6:pieces%d:" % (pl, len(pieces)), pieces, b"e",
        ])


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def self_test():
    assert mix64(0) == 0
    assert mix64(1) == 0x5692161D100B05E5
    assert size_for(42, 0) == 364_998_832
    assert title(7) == "sample-title-000007.mkv"
    assert piece_length_for(4 * GIB) == 1 * MIB
    assert piece_length_for(64 * MIB) == 128 * 1024
    lay = Layout(b"WARNING")
    pl, pieces = lay.pieces(40_000)
    data = b"WARNING" + bytes(40_000 - 7)
    want = b"".join(hashlib.sha1(data[i:i + pl]).digest() for i in range(0, len(data), pl))
    assert pieces == want
    lay = Layout(bytes(range(256)) * 300)  # 76,800 bytes: several 16 KiB pieces
    pl, pieces = lay.pieces(200_000)
    data = lay.payload + bytes(200_000 - len(lay.payload))
    want = b"".join(hashlib.sha1(data[i:i + pl]).digest() for i in range(0, len(data), pl))
    assert pieces == want
    for payload, size in ((b"WARNING", 50_000_123), (bytes(range(256)) * 1000, 3_000_001)):
        lay = Layout(payload)
        pl, pieces = lay.pieces(size)
        data = payload + bytes(size - len(payload))
        want = b"".join(hashlib.sha1(data[i:i + pl]).digest() for i in range(0, size, pl))
        assert pieces == want, size
    print(json.dumps({"ok": True, "self_test": "passed"}))


def drain_add_alerts(ses):
    """Waits briefly for alerts; returns (torrents added, adds failed)."""
    ok = bad = 0
    ses.wait_for_alert(100)
    for al in ses.pop_alerts():
        if isinstance(al, lt.add_torrent_alert):
            if al.error.value():
                bad += 1
            else:
                ok += 1
    return ok, bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--payload", help="warning payload file (the decoys' first bytes)")
    ap.add_argument("--titles", type=int, default=1_000_000, help="stop after this many torrents")
    ap.add_argument("--seconds", type=float, default=120, help="stop adding after this long")
    ap.add_argument("--max-rss-mib", type=float, default=6144, help="stop when RSS grew by this much")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-sizes", action="store_true", help="every decoy is payload-sized")
    ap.add_argument("--bind", default="127.0.0.5", help="loopback address for the (unused) listen socket")
    ap.add_argument("--samples", type=int, default=3, help="info hashes of the first N titles to print")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.payload:
        ap.error("--payload is required")
    if not a.bind.startswith("127."):
        ap.error("--bind must be a loopback address (127.0.0.0/8)")
    with open(a.payload, "rb") as f:
        layout = Layout(f.read())
    plen = len(layout.payload)

    settings = lt_common.settings(
        a.bind,
        alert_queue_size=100_000,
        # Not auto-managed below, so every torrent is an active seed; keep
        # the queue limits out of the way anyway.
        active_seeds=-1,
        active_limit=-1,
    )
    ses = lt.session(settings)
    save_path = os.path.join("/nonexistent-warnseed-bench", "files")
    flags = lt.torrent_flags.seed_mode  # not auto_managed, not paused
    # Warm up the per-piece-length tables and the allocator before the baseline.
    for pl_size in (MIN_PIECE, 64 * MIB, 4 * GIB):
        layout.pieces(pl_size)
    time.sleep(0.5)
    for _ in ses.pop_alerts():
        pass
    base = rss()
    max_growth = a.max_rss_mib * MIB

    samples = {}
    submitted = added = failed = 0
    gen_seconds = 0.0
    curve = []
    stop_reason = "titles"
    start = time.time()
    next_curve = start + a.seconds / 10
    i = 0
    while i < a.titles:
        now = time.time()
        if now - start >= a.seconds:
            stop_reason = "seconds"
            break
        if i % 256 == 0:
            growth = rss() - base
            if growth >= max_growth:
                stop_reason = "max_rss"
                break
            if now >= next_curve:
                curve.append([added, growth])
                next_curve = now + a.seconds / 10
        t0 = time.perf_counter()
        size = plen if a.no_sizes else max(size_for(a.seed, i), plen)
        info = layout.info(title(i), size)
        if i < a.samples:
            samples[str(i + 1)] = hashlib.sha1(info).hexdigest()
        ti = lt.torrent_info(b"d4:info" + info + b"e")
        gen_seconds += time.perf_counter() - t0
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = save_path
        atp.flags = flags
        ses.async_add_torrent(atp)
        del atp, ti, info
        submitted += 1
        i += 1
        # Keep a bounded number of adds in flight.
        while submitted - added - failed >= 2000:
            ok, bad = drain_add_alerts(ses)
            added, failed = added + ok, failed + bad
    add_seconds = time.time() - start
    deadline = time.time() + 60
    while submitted - added - failed > 0 and time.time() < deadline:
        ok, bad = drain_add_alerts(ses)
        added, failed = added + ok, failed + bad
    # Let the session settle (first tick of every torrent) before measuring.
    time.sleep(2.0)
    for _ in ses.pop_alerts():
        pass
    after = rss()
    growth = after - base
    out = {
        "ok": True,
        "libtorrent": lt.__version__,
        "torrents_added": added,
        "failed": failed,
        "stop_reason": stop_reason,
        "add_seconds": round(add_seconds, 3),
        "generate_seconds": round(gen_seconds, 3),
        "rss_base": base,
        "rss_after": after,
        "rss_delta": growth,
        "bytes_per_torrent": growth / added if added else None,
        "curve": curve,
        "samples": samples,
        "torrents_in_session": len(ses.get_torrents()),
    }
    print(json.dumps(out))
    sys.stdout.flush()
    # Removing a million torrents one by one takes long; the process exit
    # frees everything at once.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
