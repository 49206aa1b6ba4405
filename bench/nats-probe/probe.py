#!/usr/bin/env python3
"""Probe the JetStream behaviour the relay cluster design relies on, against real nats-server
processes on 127.0.0.1. Each subcommand starts its own servers in a temporary directory, prints
what the server answered, and stops them.

  probe.py constraints   CAS, dedupe, RePublish, direct get, KV, version (R1 single, R1 and R3
                         on a 3-node cluster)
  probe.py ceiling       sequential CAS publishes to one subject: rate and latency
  probe.py kill          kill -9 of the stream leader while a writer sends: nothing lost

The server binary comes from --nats-server or $NATS_SERVER. Needs `pip install nats-py==2.16.0`.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import nats
from nats.js.api import KeyValueConfig, RePublish

STREAM = "CHAT"
BASE_PORT = 14300  # client ports 14301.., cluster ports 16301..
MIN_VERSION = (2, 12, 0)
SYNC = "always"  # --sync: "always" (the documented setting) or "2m" (the server default)
PRESENCE_HEADERS = ("Nats-TTL", "Nats-Marker-Reason", "Nats-Sequence", "Nats-Last-Sequence")


# ---------------------------------------------------------------------------- servers


class Server:
    def __init__(self, binary, root, name, port, cluster_port=None, routes=()):
        self.binary, self.name, self.port = binary, name, port
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "server.conf")
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{port}",
            f"http: 127.0.0.1:{port + 4000}",
            "jetstream {",
            f'  store_dir: "{os.path.join(self.dir, "js")}"',
            "}",
        ]
        if SYNC:  # empty: leave the server's default (nats-server 2.9 rejects the line)
            lines.insert(-1, f"  sync_interval: {SYNC}")
        if cluster_port:
            routes_s = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
            lines += [
                "cluster {",
                "  name: probe",
                f"  listen: 127.0.0.1:{cluster_port}",
                f"  routes: [{routes_s}]",
                "}",
            ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        with open(os.path.join(self.dir, "server.log"), "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=log, stderr=log)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def varz_jetstream_config(self):
        """The durability settings as the monitoring endpoint reports them."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port + 4000}/varz", timeout=5) as r:
            return json.load(r)["jetstream"]["config"]

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"


def single(binary, root):
    return [Server(binary, root, "s1", BASE_PORT + 1)]


def cluster(binary, root, n=3):
    cports = [BASE_PORT + 2000 + 11 + i for i in range(n)]
    return [
        Server(binary, root, f"n{i + 1}", BASE_PORT + 11 + i, cports[i], cports) for i in range(n)
    ]


async def quiet(_err):
    """Connection errors while servers start are expected; the caller's deadline bounds them."""


async def wait_js_ready(urls, replicas, deadline_s=60.0):
    """Bounded wait until a stream of `replicas` can be created (meta leader elected)."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            nc = await nats.connect(
                servers=urls, connect_timeout=2, max_reconnect_attempts=2, error_cb=quiet
            )
            js = nc.jetstream(timeout=5)
            await js.add_stream(name="READY", subjects=["ready.x"], num_replicas=replicas)
            await js.delete_stream("READY")
            await nc.close()
            return
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
            last = e
            await asyncio.sleep(0.5)
    raise RuntimeError(f"JetStream not ready after {deadline_s}s: {last!r}")


# ---------------------------------------------------------------------------- helpers


def parse_version(v):
    """'2.15.1' -> ((2, 15, 1), False); '2.12.0-RC.1' -> ((2, 12, 0), True); None when
    unparsable (refused)."""
    core, _, pre = v.partition("-")
    core = core.split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts), bool(pre)


def version_ok(v):
    """At least MIN_VERSION; a pre-release of MIN_VERSION itself comes before it (semver)."""
    parsed = parse_version(v)
    if parsed is None:
        return False
    nums, pre = parsed
    return nums > MIN_VERSION or (nums == MIN_VERSION and not pre)


async def pub(nc, subject, data, headers=None, timeout=5.0):
    """A JetStream publish as a raw request: returns the server's JSON answer untouched."""
    msg = await nc.request(subject, data, timeout=timeout, headers=headers)
    return json.loads(msg.data)


def cas_headers(expected_last, msg_id=None, chat_seq=None):
    h = {"Nats-Expected-Last-Subject-Sequence": str(expected_last)}
    if msg_id is not None:
        h["Nats-Msg-Id"] = msg_id
    if chat_seq is not None:
        h["Chat-Seq"] = str(chat_seq)
    return h


async def direct_get(nc, req=None, subject_suffix=None):
    subj = f"$JS.API.DIRECT.GET.{STREAM}"
    if subject_suffix:
        subj += "." + subject_suffix
        data = b""
    else:
        data = json.dumps(req).encode()
    msg = await nc.request(subj, data, timeout=5)
    return msg


async def direct_batch(nc, req):
    """A batched direct get: collects messages until the EOB status (204)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(req).encode(), reply=inbox)
    out = []
    try:
        for _ in range(10_000):
            m = await sub.next_msg(timeout=5)
            status = (m.headers or {}).get("Status")
            if status:
                out.append(("status", status, dict(m.headers)))
                break
            out.append(("msg", m.headers.get("Nats-Sequence"), m.headers.get("Chat-Seq")))
    finally:
        await sub.unsubscribe()
    return out


def show(label, value):
    print(f"  {label}: {value}")


def stream_config(replicas):
    return {
        "name": STREAM,
        "subjects": ["chat.>", "ctr.>"],
        "storage": "file",
        "num_replicas": replicas,
        "allow_direct": True,
        "allow_atomic": True,
        "duplicate_window": 120_000_000_000,
        "republish": {"src": "chat.>", "dest": "fan.>"},
    }


async def create_stream(nc, replicas):
    cfg = stream_config(replicas)
    msg = await nc.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(cfg).encode(), timeout=10)
    resp = json.loads(msg.data)
    if "error" in resp:
        raise RuntimeError(f"stream create: {resp['error']}")
    return resp


# ---------------------------------------------------------------------------- constraints


async def probe_constraints(urls, label, replicas):
    print(f"\n== {label}: stream {STREAM} R{replicas}")
    nc = await nats.connect(servers=urls)
    info = nc._server_info  # the INFO the server sent on connect
    show("INFO version", info.get("version"))
    show("version accepted (>= 2.12.0)", version_ok(info.get("version", "")))
    for v in ("2.11.9", "2.12.0-RC.1", "2.12.0", "2.12.1-RC.2", "v2.12.0", ""):
        show(f"version_ok({v!r})", version_ok(v))
    acct = json.loads((await nc.request("$JS.API.INFO", b"", timeout=5)).data)
    show("$JS.API.INFO api.level", acct.get("api", {}).get("level"))

    await create_stream(nc, replicas)
    fan, plain = [], []

    async def on_fan(m):
        fan.append(m)

    async def on_plain(m):
        plain.append(m)

    s1 = await nc.subscribe("fan.>", cb=on_fan)
    s2 = await nc.subscribe("chat.>", cb=on_plain)

    room = "chat.726f6f6d"
    a = await pub(nc, room, b"m1", cas_headers(0, "r:alice:1", 1))
    show("CAS expected=0 on empty subject", a)
    b = await pub(nc, room, b"m2", cas_headers(a["seq"], "r:alice:2", 2))
    show(f"CAS expected={a['seq']}", b)
    other = await pub(nc, "chat.6f74686572", b"o1", cas_headers(0))
    show("other room, expected=0 (per-subject, not per-stream)", other)
    wrong = await pub(nc, room, b"REJECTED", cas_headers(a["seq"], "r:bob:1", 3))
    show(f"CAS stale expected={a['seq']} (last is {b['seq']})", wrong)
    zero = await pub(nc, room, b"REJECTED0", cas_headers(0, "r:bob:9", 3))
    show("CAS expected=0 on non-empty subject", zero)

    # Retries of the stored message b (same Msg-Id) in the three forms a relay may send them.
    same = await pub(nc, room, b"m2", cas_headers(a["seq"], "r:alice:2", 2))
    show("retry of stored msg, same (now stale) expected", same)
    nohdr = await pub(nc, room, b"m2", {"Nats-Msg-Id": "r:alice:2", "Chat-Seq": "2"})
    show("retry of stored msg, no expected header", nohdr)
    fresh = await pub(nc, room, b"m2", cas_headers(b["seq"], "r:alice:2", 2))
    show("retry of stored msg, current expected", fresh)
    c = await pub(nc, room, b"m3", cas_headers(b["seq"], "r:carol:1", 3))
    show("next CAS after retries", c)

    # Barrier: a flush round trip, then a direct get of the last message, before reading the
    # subscriptions; the republish of c is sent after c is stored.
    await nc.flush(timeout=5)
    for _ in range(100):
        if any(m.data == b"m3" for m in fan):
            break
        await asyncio.sleep(0.05)
    show("plain chat.> subscriber payloads", [m.data.decode() for m in plain])
    show("RePublish fan.> payloads", [m.data.decode() for m in fan])
    if fan:
        m = fan[-1]
        show("RePublish subject", m.subject)
        show("RePublish headers", dict(m.headers or {}))
    await s1.unsubscribe()
    await s2.unsubscribe()

    g = await direct_get(nc, {"seq": b["seq"]})
    show(f"direct get seq={b['seq']}", (g.data, dict(g.headers or {})))
    g = await direct_get(nc, {"last_by_subj": room})
    show("direct get last_by_subj", (g.data, dict(g.headers or {})))
    g = await direct_get(nc, subject_suffix=room)
    show("direct get $JS.API.DIRECT.GET.CHAT.<subject>", (g.data, dict(g.headers or {})))
    g = await direct_get(nc, {"seq": 999})
    show("direct get missing seq", (g.data, dict(g.headers or {})))
    batch = await direct_batch(nc, {"seq": 1, "next_by_subj": room, "batch": 10})
    show("direct batch next_by_subj from seq 1", batch)
    batch = await direct_batch(nc, {"seq": 1, "next_by_subj": room, "batch": 10, "max_bytes": 8})
    show("direct batch with max_bytes 8", batch)
    await probe_filtered_cas(nc)
    await probe_kv(nc, replicas)
    await probe_atomic_batch(nc, replicas)
    await nc.request(f"$JS.API.STREAM.DELETE.{STREAM}", b"", timeout=10)
    await nc.close()


async def probe_filtered_cas(nc):
    """The alternative layout chat.<room>.<sender>: one CAS over the room's wildcard."""

    def hdr(room, last):
        return {
            "Nats-Expected-Last-Subject-Sequence": str(last),
            "Nats-Expected-Last-Subject-Sequence-Subject": f"chat.{room}.*",
        }

    a = await pub(nc, "chat.f1.alice", b"a1", hdr("f1", 0))
    show("filtered CAS chat.f1.alice expected=0 over chat.f1.*", a)
    b = await pub(nc, "chat.f1.bob", b"b1", hdr("f1", a["seq"]))
    show(f"filtered CAS chat.f1.bob expected={a['seq']}", b)
    c = await pub(nc, "chat.f1.alice", b"a2", hdr("f1", a["seq"]))
    show(f"filtered CAS chat.f1.alice stale expected={a['seq']}", c)
    # Trimming one room by count without max_msgs_per_subject: purge with a filter and keep.
    req = json.dumps({"filter": "chat.f1.*", "keep": 1}).encode()
    r = json.loads((await nc.request(f"$JS.API.STREAM.PURGE.{STREAM}", req, timeout=5)).data)
    show("purge filter chat.f1.* keep 1", r)


async def probe_atomic_batch(nc, replicas):
    """A nickname binding as two keys (nick -> identity, identity -> nick) written all or
    nothing: an atomic batch (allow_atomic) with a CAS on each message."""
    cfg = {
        "name": "KV_nicks",
        "subjects": ["$KV.nicks.>"],
        "storage": "file",
        "num_replicas": replicas,
        "allow_direct": True,
        "allow_atomic": True,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "max_msgs_per_subject": 1,
        "discard": "new",
    }
    r = json.loads(
        (
            await nc.request("$JS.API.STREAM.CREATE.KV_nicks", json.dumps(cfg).encode(), timeout=10)
        ).data
    )
    if "error" in r:
        show("atomic batch stream", r["error"])
        return

    async def batch(bid, items):
        for i, (subj, data) in enumerate(items, 1):
            h = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i)}
            h.update(cas_headers(0))
            if i == len(items):
                h["Nats-Batch-Commit"] = "1"
                return json.loads((await nc.request(subj, data, headers=h, timeout=5)).data)
            await nc.publish(subj, data, headers=h)

    k = "$KV.nicks.726f6f6d"
    show(
        "batch bind alice<->aaaa",
        await batch("b1", [(f"{k}.n.alice", b"aaaa"), (f"{k}.i.aaaa", b"alice")]),
    )
    show(
        "batch bind al2<->aaaa (identity already bound)",
        await batch("b2", [(f"{k}.n.al2", b"aaaa"), (f"{k}.i.aaaa", b"al2")]),
    )
    g = await nc.request(
        "$JS.API.DIRECT.GET.KV_nicks",
        json.dumps({"last_by_subj": f"{k}.n.al2"}).encode(),
        timeout=5,
    )
    show("first message of the refused batch stored?", (g.headers or {}).get("Status", "yes"))
    await nc.request("$JS.API.STREAM.DELETE.KV_nicks", b"", timeout=10)


async def probe_kv(nc, replicas):
    js = nc.jetstream(timeout=10)
    rooms = await js.create_key_value(KeyValueConfig(bucket="rooms", replicas=replicas))
    r1 = await rooms.create("726f6f6d", b"verifier+owner")
    show("KV create new key -> revision", r1)
    try:
        await rooms.create("726f6f6d", b"second creator")
        show("KV create existing key", "ACCEPTED (unexpected)")
    except Exception as e:  # noqa: BLE001 - we print what the client raised
        show("KV create existing key", f"{type(e).__name__}: {e}")
    r2 = await rooms.update("726f6f6d", b"v2", last=r1)
    show("KV update with current revision", r2)
    try:
        await rooms.update("726f6f6d", b"v3", last=r1)
        show("KV update with stale revision", "ACCEPTED (unexpected)")
    except Exception as e:  # noqa: BLE001
        show("KV update with stale revision", f"{type(e).__name__}: {e}")
    raw = await pub(nc, "$KV.rooms.726f6f6d", b"x", cas_headers(0))
    show("raw KV create (expected-last-subject-seq 0) on existing key", raw)

    # Presence: a per-key TTL (Nats-TTL, needs allow_msg_ttl) and a subject delete marker on
    # expiry, republished so every node hears that a key expired without polling.
    pres = await js.create_key_value(
        KeyValueConfig(
            bucket="presence",
            replicas=replicas,
            limit_marker_ttl=1,
            republish=RePublish(src="$KV.presence.>", dest="presence.>"),
        )
    )
    si = await js.stream_info("KV_presence")
    show("presence stream allow_msg_ttl", si.config.allow_msg_ttl)
    events = []

    async def on_presence(m):
        events.append((round(time.monotonic() - t0, 2), dict(m.headers or {}), m.data))

    sub = await nc.subscribe("presence.>", cb=on_presence)
    t0 = time.monotonic()
    await pres.create("726f6f6d.n1.alice", b"node n1", msg_ttl=2)
    for _ in range(100):  # bounded: 100 x 0.1 s, ends when the expiry marker arrived
        if len(events) >= 2:
            break
        await asyncio.sleep(0.1)
    for t, h, d in events:
        show(f"presence event at +{t}s", (d, {k: h.get(k) for k in PRESENCE_HEADERS}))
    await sub.unsubscribe()
    try:
        e = await pres.get("726f6f6d.n1.alice")
        show("get while the marker lives", (e.value, e.operation))
    except Exception as e:  # noqa: BLE001
        show("get while the marker lives", f"{type(e).__name__}: {e}")
    key = "$KV.presence.726f6f6d.n1.alice"
    r = await pub(nc, key, b"again", {**cas_headers(0), "Nats-TTL": "2"})
    show("raw create (expected 0) while the marker lives", r)
    if "error" in r:
        last = int(r["error"]["description"].rsplit(":", 1)[1])
        r = await pub(nc, key, b"again", {**cas_headers(last), "Nats-TTL": "2"})
        show(f"raw create with expected={last} taken from the error", r)
    await js.delete_key_value("rooms")
    await js.delete_key_value("presence")


# ---------------------------------------------------------------------------- ceiling


async def ceiling(urls, label, replicas, seconds, size):
    nc = await nats.connect(servers=urls)
    await create_stream(nc, replicas)
    room, last, n, lat = "chat.6365696c", 0, 0, []
    refused = {}  # (err_code, description) -> count: refusals of a correct expected sequence
    payload = os.urandom(size)
    end = time.monotonic() + seconds
    t_start = time.monotonic()
    while time.monotonic() < end:
        t = time.perf_counter()
        ack = await pub(nc, room, payload, cas_headers(last, f"c:{n + 1}", n + 1))
        if "error" in ack:
            # Nobody else writes here, so `last` is right: count the refusal, retry the same
            # message (same Msg-Id) after re-reading the room's last sequence.
            key = (ack["error"].get("err_code"), ack["error"].get("description"))
            refused[key] = refused.get(key, 0) + 1
            if sum(refused.values()) > 1000:
                raise RuntimeError(f"too many refusals: {refused}")
            m = await direct_get(nc, {"last_by_subj": room})
            last = int((m.headers or {}).get("Nats-Sequence", last))
            continue
        lat.append(time.perf_counter() - t)
        last, n = ack["seq"], n + 1
    elapsed = time.monotonic() - t_start
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    print(
        f"{label} R{replicas}: {n} CAS publishes in {elapsed:.1f}s = {n / elapsed:.0f}/s, "
        f"latency p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {lat[-1] * 1000:.1f} ms; "
        f"refused then retried: {refused or 'none'}"
    )
    await nc.request(f"$JS.API.STREAM.DELETE.{STREAM}", b"", timeout=10)
    await nc.close()


async def ceiling_batch(urls, label, replicas, seconds, size):
    """The envelope and its sender's counter record (ctr.<room>.<sender>) as one atomic batch,
    each with its own CAS: the counter is durable exactly when the envelope is."""
    nc = await nats.connect(servers=urls)
    await create_stream(nc, replicas)
    room, last, last_ctr, n, lat, refused = "chat.6365696c", 0, 0, 0, [], {}
    ctr_subject = "ctr.6365696c.616c696365"
    payload = os.urandom(size)
    end = time.monotonic() + seconds
    t_start = time.monotonic()
    while time.monotonic() < end:
        t = time.perf_counter()
        bid = f"b{n}.{sum(refused.values())}"
        h1 = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": "1", **cas_headers(last, None, n + 1)}
        await nc.publish(room, payload, headers=h1)
        h2 = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": "2", "Nats-Batch-Commit": "1"}
        h2.update(cas_headers(last_ctr))
        ack = await pub(nc, ctr_subject, str(n + 1).encode(), h2)
        if "error" in ack:
            key = (ack["error"].get("err_code"), ack["error"].get("description"))
            refused[key] = refused.get(key, 0) + 1
            if sum(refused.values()) > 1000:
                raise RuntimeError(f"too many refusals: {refused}")
            continue  # nothing of a refused batch is stored: the same state, a new batch id
        lat.append(time.perf_counter() - t)
        last, last_ctr, n = ack["seq"] - 1, ack["seq"], n + 1
    elapsed = time.monotonic() - t_start
    lat.sort()
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
    print(
        f"{label} R{replicas} atomic batch (envelope + counter): {n} in {elapsed:.1f}s = "
        f"{n / elapsed:.0f}/s, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
        f"refused then retried: {refused or 'none'}"
    )
    await nc.request(f"$JS.API.STREAM.DELETE.{STREAM}", b"", timeout=10)
    await nc.close()


# ---------------------------------------------------------------------------- kill


class Writer:
    """One room's writer as a relay would be: CAS on the subject, Msg-Id per (room, sender,
    counter), reload and retry on a wrong last sequence or a timeout."""

    def __init__(self, nc, room):
        self.nc, self.room = nc, room
        self.last_stream_seq, self.chat_seq = 0, 0
        self.acked = {}  # chat_seq -> stream seq
        self.retries, self.dups, self.max_pause = 0, 0, 0.0

    async def reload(self):
        m = await direct_get(self.nc, {"last_by_subj": self.room})
        h = m.headers or {}
        if h.get("Status") == "404":
            self.last_stream_seq, self.chat_seq = 0, 0
        elif "Nats-Sequence" in h:
            self.last_stream_seq = int(h["Nats-Sequence"])
            self.chat_seq = int(h["Chat-Seq"])
        else:
            raise RuntimeError(f"direct get answered {h}")

    async def send(self, counter, deadline):
        """Store one envelope; returns after its ack. Bounded by `deadline` (monotonic)."""
        t0 = time.monotonic()
        msg_id = f"{self.room}:w:{counter}"
        while time.monotonic() < deadline:
            seq = self.chat_seq + 1
            hdr = cas_headers(self.last_stream_seq, msg_id, seq)
            try:
                ack = await pub(self.nc, self.room, b"x" * 200, hdr, timeout=2)
            except Exception:  # noqa: BLE001 - timeout / no responders during election
                self.retries += 1
                await asyncio.sleep(0.1)
                await self.safe_reload()
                continue
            if "error" in ack:
                self.retries += 1
                await self.safe_reload()
                continue
            if ack.get("duplicate"):
                self.dups += 1
                await self.safe_reload()
                # The stored copy carries its own Chat-Seq; find it by reading back.
                m = await direct_get(self.nc, {"seq": ack["seq"]})
                seq = int(m.headers["Chat-Seq"])
            else:
                self.last_stream_seq, self.chat_seq = ack["seq"], seq
            self.acked[seq] = ack["seq"]
            self.max_pause = max(self.max_pause, time.monotonic() - t0)
            return True
        return False

    async def safe_reload(self):
        try:
            await self.reload()
        except Exception:  # noqa: BLE001 - leader gone; the next attempt retries
            await asyncio.sleep(0.1)


async def stream_leader(nc):
    msg = await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5)
    return json.loads(msg.data)["cluster"]["leader"]


async def read_all(nc, room):
    """All (stream seq, Chat-Seq) on the subject via batched direct gets from seq 1."""
    out, start = [], 1
    for _ in range(1000):  # bounded pages
        page = await direct_batch(nc, {"seq": start, "next_by_subj": room, "batch": 500})
        msgs = [(int(s), int(c)) for kind, s, c in page if kind == "msg"]
        out += msgs
        if not msgs:
            return out
        start = msgs[-1][0] + 1
    return out


async def kill_test(servers, count, kill_after):
    urls = [s.url for s in servers]
    nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await create_stream(nc, 3)
    room = "chat.6b696c6c"
    w = Writer(nc, room)
    leader = await stream_leader(nc)
    victim = next(s for s in servers if s.name == leader)
    deadline = time.monotonic() + 120
    killed_at = None
    for counter in range(1, count + 1):
        if counter == kill_after:
            victim.kill9()
            killed_at = counter
            print(
                f"kill -9 stream leader {leader} before send {counter}; "
                f"client connected to {nc.connected_url.port}"
            )
        if not await w.send(counter, deadline):
            print(f"writer stopped at {counter}: deadline")
            break
    new_leader = await stream_leader(nc)
    print(
        f"acked {len(w.acked)} of {count}; retries {w.retries}; duplicates answered {w.dups}; "
        f"longest send incl. failover {w.max_pause * 1000:.0f} ms; new leader {new_leader}"
    )
    victim.start()
    await wait_current(nc, victim.name)
    stored = await read_all(nc, room)
    check(w, stored, killed_at)
    # Then every node down by kill -9 at once, all restarted: is every ack still there?
    for s in servers:
        s.kill9()
    for s in servers:
        s.start()
    await nc.close()
    await wait_js_ready(urls, 3)
    nc = await nats.connect(servers=urls)
    for _ in range(100):
        try:
            stored = await read_all(nc, room)
            break
        except Exception:  # noqa: BLE001 - stream leader not yet elected
            await asyncio.sleep(0.3)
    print("after kill -9 of all three nodes and restart:")
    check(w, stored, killed_at)
    await nc.close()


async def wait_current(nc, name):
    for _ in range(200):  # bounded: 200 x 0.1 s
        msg = await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5)
        c = json.loads(msg.data).get("cluster", {})
        for r in c.get("replicas", []):
            if r.get("name") == name and r.get("current"):
                print(f"{name} back and current")
                return
        await asyncio.sleep(0.1)
    print(f"{name} not current after 20 s")


def check(w, stored, killed_at):
    chat = [c for _, c in stored]
    by_stream = dict(stored)
    lost = [c for c, s in w.acked.items() if by_stream.get(s) != c]
    dup = len(chat) - len(set(chat))
    gaps = [c for c in range(1, max(chat, default=0) + 1) if c not in set(chat)]
    print(
        f"  stored {len(stored)} messages; acked but missing {len(lost)}; duplicate Chat-Seq "
        f"{dup}; gaps in Chat-Seq {len(gaps)}; Chat-Seq 1..{max(chat, default=0)}"
    )


# ---------------------------------------------------------------------------- old server


async def probe_old(urls):
    """What a server older than MIN_VERSION does with the features the design relies on: the
    reason the version is checked instead of trusting that a refused feature shows."""
    nc = await nats.connect(servers=urls)
    v = nc._server_info.get("version", "")
    show("INFO version", v)
    show("version accepted (>= 2.12.0)", version_ok(v))
    cfg = stream_config(1)
    msg = await nc.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(cfg).encode(), timeout=10)
    resp = json.loads(msg.data)
    show("create CHAT (allow_atomic, republish)", resp.get("error") or "created")
    if "error" in resp:
        cfg.pop("allow_atomic")
        msg = await nc.request(
            f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(cfg).encode(), timeout=10
        )
        resp = json.loads(msg.data)
        show("create CHAT without allow_atomic", resp.get("error") or "created")
    if "config" in resp:
        show("allow_atomic as stored", resp["config"].get("allow_atomic"))
    room = "chat.6f6c64"
    show("CAS expected=0", await pub(nc, room, b"m1", cas_headers(0)))
    h = {"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "1", **cas_headers(1)}
    await nc.publish(room, b"batch-1", headers=h)
    h = {"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "2", "Nats-Batch-Commit": "1"}
    show("atomic batch commit", await pub(nc, room, b"batch-2", h))
    show("Nats-TTL on a stream without allow_msg_ttl", await pub(nc, room, b"t", {"Nats-TTL": "1"}))
    filt = {
        "Nats-Expected-Last-Subject-Sequence": "0",
        "Nats-Expected-Last-Subject-Sequence-Subject": "chat.nothing.*",
    }
    show("filtered CAS, expected 0 over an empty wildcard", await pub(nc, room, b"f", filt))
    si = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5)).data)
    show("messages stored", si["state"]["messages"])
    await nc.close()


# ---------------------------------------------------------------------------- main


async def run(args):
    binary = args.nats_server or os.environ.get("NATS_SERVER")
    if not binary:
        sys.exit("no nats-server: pass --nats-server PATH or set NATS_SERVER")
    global SYNC
    for sync in args.sync.split(","):
        SYNC = sync
        print(f"jetstream sync_interval: {SYNC}")
        await run_once(args, binary)


async def run_once(args, binary):
    with tempfile.TemporaryDirectory(prefix="nats-probe-") as root:
        groups = [("single", single(binary, os.path.join(root, "single")))]
        groups.append(("cluster", cluster(binary, os.path.join(root, "cluster"))))
        try:
            for _, servers in groups:
                for s in servers:
                    s.start()
            one = [s.url for s in groups[0][1]]
            three = [s.url for s in groups[1][1]]
            await wait_js_ready(one, 1)
            await wait_js_ready(three, 3)
            if args.cmd == "constraints":
                for s in groups[0][1] + groups[1][1]:
                    show(f"{s.name} /varz jetstream.config", s.varz_jetstream_config())
                await probe_constraints(one, "single server", 1)
                await probe_constraints(three, "3-node cluster", 1)
                await probe_constraints(three, "3-node cluster", 3)
            elif args.cmd == "ceiling":
                print(f"load average before: {os.getloadavg()}")
                await ceiling(one, "single server", 1, args.seconds, args.size)
                await ceiling(three, "3-node cluster", 1, args.seconds, args.size)
                await ceiling(three, "3-node cluster", 3, args.seconds, args.size)
                if args.batch:
                    await ceiling_batch(one, "single server", 1, args.seconds, args.size)
                    await ceiling_batch(three, "3-node cluster", 3, args.seconds, args.size)
                print(f"load average after: {os.getloadavg()}")
            elif args.cmd == "old":
                await probe_old(one)
            elif args.cmd == "kill":
                await kill_test(groups[1][1], args.count, args.kill_after)
        finally:
            for _, servers in groups:
                for s in servers:
                    s.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("cmd", choices=["constraints", "ceiling", "kill", "old"])
    p.add_argument("--nats-server", help="path of the nats-server binary")
    p.add_argument("--seconds", type=float, default=10.0, help="ceiling: seconds per run")
    p.add_argument("--size", type=int, default=512, help="ceiling: payload bytes")
    p.add_argument(
        "--sync",
        default="always",
        help='jetstream sync_interval, comma-separated runs ("2m" = default)',
    )
    p.add_argument("--batch", action="store_true", help="ceiling: also the atomic-batch layout")
    p.add_argument("--count", type=int, default=2000, help="kill: envelopes to send")
    p.add_argument("--kill-after", type=int, default=500, help="kill: send number to kill at")
    args = p.parse_args()
    binary = args.nats_server or os.environ.get("NATS_SERVER")
    if binary:
        out = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True)
        print(out.stdout.strip())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
