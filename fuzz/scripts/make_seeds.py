#!/usr/bin/env python3
"""Writes the hand-made seed corpus (fuzz/corpus/<target>/seed-*).

Run from anywhere: python3 fuzz/scripts/make_seeds.py. Every title in the
seeds is a neutral synthetic name (sample-title-NNNNNN.ext).
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def bstr(b):
    if isinstance(b, str):
        b = b.encode()
    return str(len(b)).encode() + b":" + b


def frame(msg_id, body=b""):
    return struct.pack(">I", len(body) + 1) + bytes([msg_id]) + body


def triple(msg_id, a, b, c):
    return frame(msg_id, struct.pack(">III", a, b, c))


def extended(ext_id, payload):
    return frame(20, bytes([ext_id]) + payload)


def ext_handshake(ut_metadata, version="SampleClient 1.0"):
    return extended(
        0,
        b"d1:md11:ut_metadatai%de6:ut_pexi2ee1:v" % ut_metadata + bstr(version) + b"e",
    )


def metadata_request(piece):
    return b"d8:msg_typei0e5:piecei%dee" % piece


INFO_DICT = (
    b"d6:lengthi40000e4:name"
    + bstr("sample-title-000123.mp4")
    + b"12:piece lengthi16384e6:pieces"
    + bstr(bytes(range(60)))
    + b"e"
)

# bencode
put("bencode", "dict", b"d3:bari-7e3:fool4:spami0eee")
put("bencode", "info-dict", INFO_DICT)
put(
    "bencode",
    "ext-handshake",
    b"d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei123e1:pi6881e4:reqqi512e1:v13:warnseed/fuzz6:yourip4:\x7f\x00\x00\x01e",
)
put("bencode", "metadata-data-prefix", b"d8:msg_typei1e5:piecei0e10:total_sizei5eeRAWXX")
put("bencode", "ints", b"li0ei-9223372036854775808ei9223372036854775807e0:e")
put("bencode", "unsorted-dup", b"d1:bi1e1:ai2e1:ai3ee")

# wire_message: frame bodies (no length prefix)
put("wire_message", "keepalive", b"")
put("wire_message", "request", bytes([6]) + struct.pack(">III", 1, 16384, 16384))
put("wire_message", "piece", bytes([7]) + struct.pack(">II", 0, 0) + b"sample-block")
put("wire_message", "bitfield", bytes([5, 0xFF, 0xC0]))
put("wire_message", "have", bytes([4]) + struct.pack(">I", 2))
put("wire_message", "port", bytes([9, 0x1A, 0xE1]))
put("wire_message", "reject", bytes([0x10]) + struct.pack(">III", 0, 0, 16384))
put("wire_message", "extended", bytes([20, 0]) + b"d1:md11:ut_metadatai3eee")
HANDSHAKE = (
    b"\x13BitTorrent protocol"
    + bytes([0, 0, 0, 0, 0, 0x10, 0, 0x05])
    + bytes(range(20))
    + b"-XX0000-synthetic001"
)
put("wire_message", "handshake", HANDSHAKE)

# peer_session: 5 header bytes then the peer's stream after its handshake.
#   flags: bit0 fast, bit1 ext, bits2-3 torrent, bits4-5 write mode,
#          bit6 tight limits, bit7 choke idle
def session(flags, c1, c2, c3, step, stream):
    return bytes([flags, c1, c2, c3, step]) + stream


# The first read is the extension handshake and interested, so the driver
# unchokes before the requests arrive and they are served.
OPENING = ext_handshake(3) + frame(2)
put(
    "peer_session",
    "fast-ext-download",
    session(
        0x03, len(OPENING) - 1, 199, 199, 2,
        OPENING
        + triple(6, 0, 0, 16384)
        + triple(6, 1, 0, 8192)
        + triple(6, 1, 8192, 8192)
        + triple(6, 2, 0, 40000 - 32768)
        + frame(4, struct.pack(">I", 1))
        + extended(1, metadata_request(0))
        + triple(8, 2, 0, 40000 - 32768)
        + frame(3)
        + struct.pack(">I", 0),
    ),
)
put(
    "peer_session",
    "bitfield-partial-writes",
    session(
        0x0C | 0x10, 40, 3, 255, 60,
        frame(5, bytes([0x80, 0, 0, 0]))
        + frame(2)
        + b"".join(triple(6, i, 0, 16384) + triple(6, i, 16384, 16384) for i in range(4))
        + struct.pack(">I", 0)
        + frame(4, struct.pack(">I", 3)),
    ),
)
put(
    "peer_session",
    "metadata-stalled-reader",
    session(
        0x03 | 0x08 | 0x20 | 0x40, 31, 31, 31, 1,
        ext_handshake(7)
        + b"".join(extended(1, metadata_request(p)) for p in [0, 1, 2, 0, 1, 2, 0, 1, 2]),
    ),
)
put(
    "peer_session",
    "fast-choked-rejects",
    session(
        0x01 | 0x80 | 0x30, 16, 16, 16, 0,
        triple(6, 0, 0, 16384)
        + triple(6, 1, 0, 16384)
        + frame(2)
        + triple(6, 1, 0, 16384)
        + frame(3)
        + frame(0x0E),
    ),
)
put(
    "peer_session",
    "invalid-request",
    session(0x00, 255, 255, 255, 0, frame(2) + triple(6, 0, 16000, 16384)),
)

# tracker_response
put(
    "tracker_response",
    "ok",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nd8:intervali900e5:peers0:e",
)
put("tracker_response", "failure", b"HTTP/1.0 200 OK\r\n\r\nd14:failure reason10:not listede")
put("tracker_response", "not-found", b"HTTP/1.0 404 Not Found\r\n\r\n")
put(
    "tracker_response",
    "body",
    b"d8:completei1e10:incompletei0e8:intervali1800e12:min intervali60e5:peers6:\x7f\x00\x00\x01\x1a\xe1e",
)
put("tracker_response", "url", "http://127.0.0.1:6969/announce?key=1")
put("tracker_response", "url-v6", "http://[::1]:7000/a")

# catalog_row: the first byte picks the use (0 title, 1 .csv, 2 .jsonl, 3 all)
CSV = (
    "title,size_bytes,campaign,language\n"
    "sample-title-000123.mp4,1000,c1,en\n"
    '"sample, quoted 000124.mkv",,,\n'
)
JSONL = (
    '{"title":"sample-title-000125.mp4","size_bytes":123}\n\n'
    '{"title":"sample-title-000126.avi","campaign":"c","language":"nb-NO"}\n'
)
put("catalog_row", "csv", b"\x01" + CSV.encode())
put("catalog_row", "jsonl", b"\x02" + JSONL.encode())
put("catalog_row", "csv-all-uses", b"\x03" + CSV.encode())
put("catalog_row", "jsonl-all-uses", b"\x03" + JSONL.encode())
put("catalog_row", "title", b"\x00sample-title-000127.mp4")
put(
    "catalog_row",
    "bad-rows",
    b"\x01title,size_bytes\nsample-title-000128.mp4,0\nsample-title-000128.mp4,10\n",
)
put("catalog_row", "bom-header", b"\x01" + "\ufefftitle,language\nsample-title-000129.mp4,en\n".encode())
