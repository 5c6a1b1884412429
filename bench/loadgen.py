"""Load generator: N receivers and one sender in one room, over picows (a low-overhead client).

Use it as a library::

    from bench.loadgen import Scenario, run
    result = run("ws://127.0.0.1:8000/ws/bench", Scenario(kind="closed", n=1000), server_pid=pid)

or from the shell (prints one JSON line)::

    python bench/loadgen.py ws://127.0.0.1:8000/ws/bench --kind closed --n 1000

Scenarios (``Scenario.kind``):

- ``closed``: closed loop with a window of in-flight messages. The sender keeps
  ``window`` messages in flight; when a message has reached every receiver, the next one
  is published. Reports deliveries/s over ``duration`` after ``warmup`` seconds.
- ``open``: open loop: the sender publishes ``rate`` messages/s whatever happens; reports
  delivery latency percentiles and losses (messages a healthy receiver never got).
  ``slow=1`` adds a receiver that stops reading after the start barrier (small SO_RCVBUF),
  and reports how the server closed it.
- ``idle``: connects ``n`` idle clients; reports the server's RSS delta per connection.
- ``churn``: ``concurrency`` workers connect, wait for the first frame (or the handshake),
  close and repeat; reports connects + disconnects per second.
- ``hold``: ``n`` idle clients (over ``rooms`` rooms) held for ``duration`` while
  ``reconnect_share`` of them per minute close and connect again, evenly spread; reports
  the reconnects done and failed and every idle client the server closed (``bench/soak.py``).

In the open loop every receiver checks the sequence numbers it gets: ``missing`` is what
some receiver never got (a gap, or short of the last one sent), ``out_of_order`` what came
twice or late. ``gate=True`` (``bench/soak.py``) lets the parent process start the measured
part: after its setup the load generator prints ``ready`` and waits for a line on stdin,
and when done it prints its result and waits for stdin to close before it disconnects.

Protocols: ``envelope`` (wsplugin's: welcome frame first, ``{"type":"publish"}`` in,
``{"type":"message",...}`` out) and ``raw`` (every text frame is relayed as is). In both the
sender sends the same frame, ``{"type":"publish","data":"#<seq>:<t_ns>#<padding>"}``, and
receivers find ``#seq:t#`` in what they get. Every receiver is ready (in the room) before
measuring: the sender repeats a ``#W#`` message until every receiver saw one, then sends
``#G#`` once; receivers count only what comes after ``#G#``. ``batch=True`` connects with
``?batch=1`` and splits every text frame on newlines (coalesced frames).

Latency is measured inside this process (``time.perf_counter_ns()`` put in the message by the
sender, read by the receiver), so sender and receivers share one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import pathlib
import resource
import signal
import socket
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
WARM = b"#W#"
GO = b"#G#"
SLOW_RCVBUF = 4096
DEFLATE_OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
"""What Chromium offers. The clients' own frames stay uncompressed (always allowed)."""
SYNC_TAIL = b"\x00\x00\xff\xff"


@dataclasses.dataclass
class Scenario:
    """What to run. Durations are in seconds."""

    kind: str = "closed"
    n: int = 1000
    duration: float = 5.0
    warmup: float = 1.0
    window: int = 10
    rate: float = 10.0
    size: int = 100
    slow: int = 0
    protocol: str = "envelope"
    batch: bool = False
    concurrency: int = 100
    drain: float = 3.0
    timeout: float = 180.0
    deflate: bool = False  # offer permessage-deflate like a browser; inflate every frame
    probe_dir: str = ""  # idle: ask the server for heap probes (bench/idle_memory.py)
    latency_sampled: bool = False  # open: only the ~50 sampled receivers time messages
    gate: bool = False  # the parent starts the measured part and ends the run (stdin)
    rooms: int = 0  # hold: clients spread over rooms <url>-0 .. <url>-<rooms - 1>
    reconnect_share: float = 0.0  # hold: share of the clients that reconnect per minute


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(samples_ns: array[int]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    values = sorted(samples_ns)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50) / 1e6,
        "p90_ms": percentile(values, 90) / 1e6,
        "p99_ms": percentile(values, 99) / 1e6,
        "max_ms": (values[-1] / 1e6) if values else float("nan"),
    }


def parse_marker(line: bytes) -> tuple[int, int] | None:
    """``(seq, t_ns)`` from a delivered message, or None for anything else."""
    i = line.find(b"#")
    j = line.find(b"#", i + 1)
    if i < 0 or j < 0:
        return None
    seq, sep, t = line[i + 1 : j].partition(b":")
    if not sep:
        return None
    return int(seq), int(t)


class Shared:
    """State shared by the sender and every receiver of one scenario run."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.n = 0  # healthy receivers that take part in the closed loop
        self.warm = 0
        self.go = 0
        self.delivered = 0
        self.wire_bytes = 0  # payload + header bytes of the data frames receivers got
        self.compressed = 0  # of those frames, how many had RSV1 (permessage-deflate)
        self.reached: dict[int, int] = {}
        self.completed = 0
        self.sent = 0
        self.sending = False
        self.measuring = False
        self.latencies: array[int] = array("q")
        self.unexpected = 0
        self.errors: list[str] = []
        self.send_next: Callable[[], None] = lambda: None
        self.changed = asyncio.Event()

    def complete(self) -> None:
        """A message reached every receiver: keep the window full."""
        self.completed += 1
        if self.sending:
            self.send_next()


class Receiver(WSListener):
    """One receiving client. Phase 0: before #W#, 1: before #G#, 2: counting."""

    def __init__(self, shared: Shared, sampled: bool, slow: bool = False) -> None:
        super().__init__()
        self.shared = shared
        self.sampled = sampled
        self.slow = slow
        self.batch = shared.scenario.batch
        self.open_loop = shared.scenario.kind == "open"
        self.phase = 0
        self.count = 0
        self.next_seq = 0  # open loop: the sequence number expected next
        self.gaps = 0  # open loop: sequence numbers skipped (never delivered)
        self.out_of_order = 0  # open loop: a sequence number below the expected one
        self.timed = sampled or not shared.scenario.latency_sampled
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.welcome = shared.scenario.protocol == "envelope"
        self.fast_path = not (sampled or slow or self.batch or self.open_loop)
        self.counting_fast = False  # phase 2 and fast_path: only count frames
        self.negotiated: bool | None = None  # the server accepted permessage-deflate
        self.inflater = zlib.decompressobj(-15)  # context takeover, like a browser

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        extensions = transport.response.headers.get("Sec-WebSocket-Extensions", "")
        self.negotiated = "permessage-deflate" in extensions
        if not self.welcome and not self.ready.done():
            self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))
        self.shared.changed.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            self.on_other_frame(transport, frame)
            return
        size = frame.payload_size
        shared = self.shared
        shared.wire_bytes += size + (2 if size < 126 else 4 if size < 65536 else 10)
        if frame.rsv1:  # every compressed frame is inflated, in counting mode too
            shared.compressed += 1
            payload = self.inflater.decompress(frame.get_payload_as_bytes() + SYNC_TAIL)
            if self.counting_fast:
                self.count_one()
            else:
                self.on_text(payload)
        elif self.counting_fast:
            self.count_one()
        else:
            self.on_text(frame.get_payload_as_bytes())

    def on_other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is CLOSE:
            payload = frame.get_payload_as_bytes()
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            with contextlib.suppress(Exception):
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def count_one(self) -> None:
        """Closed-loop hot path: the k-th message after #G# is message k (in-order delivery)."""
        k = self.count + 1
        self.count = k
        shared = self.shared
        shared.delivered += 1
        reached = shared.reached
        c = reached.get(k, 0) + 1
        if c == shared.n:
            del reached[k]
            shared.complete()
        else:
            reached[k] = c

    def on_text(self, payload: bytes) -> None:
        if self.phase < 2:
            self.on_setup(payload)
            return
        if self.slow:
            return
        lines = payload.split(b"\n") if self.batch else (payload,)
        for line in lines:
            self.on_message(line)

    def on_setup(self, payload: bytes) -> None:
        if self.welcome and not self.ready.done():
            if b'"welcome"' in payload:
                self.ready.set_result(None)
            return
        if self.phase == 0 and WARM in payload:
            self.phase = 1
            self.shared.warm += 1
            self.shared.changed.set()
        if GO in payload:
            if self.phase == 0:
                self.shared.warm += 1
            self.phase = 2
            self.counting_fast = self.fast_path
            self.shared.go += 1
            self.shared.changed.set()

    def on_message(self, line: bytes) -> None:
        shared = self.shared
        if self.sampled or self.open_loop:
            marker = parse_marker(line)
            if marker is None:
                shared.unexpected += 1
                return
            if shared.measuring and self.timed:
                shared.latencies.append(time.perf_counter_ns() - marker[1])
            if self.open_loop:
                self.count += 1
                shared.delivered += 1
                self.check_seq(marker[0])
                return
        self.count_one()

    def check_seq(self, seq: int) -> None:
        """Open loop: one publisher, so every receiver must see 0, 1, 2... in order."""
        expected = self.next_seq
        if seq < expected:
            self.out_of_order += 1
            return
        self.gaps += seq - expected
        self.next_seq = seq + 1


class Sender(WSListener):
    """The publishing client. It ignores its own echoes but notes errors and closes."""

    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.welcome = shared.scenario.protocol == "envelope"
        size = shared.scenario.size
        self.head = b'{"type":"publish","data":"'
        self.inflater = zlib.decompressobj(-15)
        self.pad = b"x" * max(0, size - len(self.head) - 2 - 30)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.welcome:
            self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("sender disconnected before ready"))
        if self.shared.sending:
            self.shared.errors.append(f"sender disconnected (close code {self.close_code})")
        self.shared.sending = False
        self.shared.changed.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is CLOSE:
            payload = frame.get_payload_as_bytes()
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            transport.disconnect()
            return
        if frame.msg_type is not TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if frame.rsv1:
            payload = self.inflater.decompress(payload + SYNC_TAIL)
        if not self.ready.done():
            if b'"welcome"' in payload:
                self.ready.set_result(None)
        elif b'"error"' in payload and len(self.shared.errors) < 10:
            self.shared.errors.append(payload[:200].decode(errors="replace"))

    def publish_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(TEXT, self.head + data + b'"}')

    def publish(self) -> None:
        """Publish the next numbered message, stamped with the current time."""
        seq = self.shared.sent
        self.shared.sent = seq + 1
        stamp = b"#%d:%d#" % (seq, time.perf_counter_ns())
        self.publish_raw(stamp + self.pad)


class Clients:
    """Connects and holds the sender and the receivers of one run."""

    def __init__(self, url: str, shared: Shared) -> None:
        self.url = url
        self.shared = shared
        self.receivers: list[Receiver] = []
        self.slow: list[Receiver] = []
        self.sender: Sender | None = None

    async def connect_receiver(self, sampled: bool, slow: bool = False) -> Receiver:
        listener = Receiver(self.shared, sampled, slow)
        factory = slow_socket if slow else None
        offer = DEFLATE_OFFER if self.shared.scenario.deflate else None
        await ws_connect(lambda: listener, self.url, websocket_handshake_timeout=60,
                         socket_factory=factory, extra_headers=offer)
        await asyncio.wait_for(listener.ready, 60)
        return listener

    async def connect_receivers(self, n: int) -> None:
        """Connect ``n`` receivers, ``concurrency`` at a time; about 50 are sampled."""
        stride = max(1, n // 50)
        gate = asyncio.Semaphore(self.shared.scenario.concurrency)

        async def one(i: int) -> Receiver:
            async with gate:
                return await self.connect_receiver(sampled=i % stride == 0)

        self.receivers = list(await asyncio.gather(*(one(i) for i in range(n))))
        self.shared.n = n

    async def connect_sender(self) -> Sender:
        sender = Sender(self.shared)
        offer = DEFLATE_OFFER if self.shared.scenario.deflate else None
        await ws_connect(lambda: sender, self.url, websocket_handshake_timeout=60,
                         extra_headers=offer)
        await asyncio.wait_for(sender.ready, 60)
        self.sender = sender
        self.shared.send_next = sender.publish
        return sender

    def all_listeners(self) -> list[Receiver | Sender]:
        out: list[Receiver | Sender] = [*self.receivers, *self.slow]
        if self.sender is not None:
            out.append(self.sender)
        return out

    def close(self) -> None:
        for listener in self.all_listeners():
            if listener.transport is not None:
                with contextlib.suppress(Exception):
                    listener.transport.disconnect(graceful=False)


def slow_socket(parsed_url: Any) -> socket.socket:
    """An unconnected socket with a tiny receive buffer (set before connect, so it sticks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setblocking(False)
    return sock


async def wait_until(shared: Shared, condition: Callable[[], bool], limit: float) -> bool:
    """Wait up to ``limit`` s until ``condition()`` holds, re-checking on every change."""
    deadline = time.monotonic() + limit
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        shared.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.changed.wait(), min(left, 0.05))
    return True


async def barrier(clients: Clients) -> None:
    """Repeat #W# until every receiver is in the room, then #G#, and wait for it everywhere."""
    shared = clients.shared
    assert clients.sender is not None
    total = len(clients.receivers) + len(clients.slow)
    deadline = time.monotonic() + 60
    while shared.warm < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {shared.warm}/{total} receivers got the warm-up message")
        clients.sender.publish_raw(WARM)
        await wait_until(shared, lambda: shared.warm >= total, 0.2)
    clients.sender.publish_raw(GO)
    if not await wait_until(shared, lambda: shared.go >= total, 60):
        raise TimeoutError(f"only {shared.go}/{total} receivers got the start message")


class Meter:
    """CPU time of this process and of the server, and the server's RSS."""

    def __init__(self, server_pid: int | None) -> None:
        self.me = psutil.Process()
        self.server = psutil.Process(server_pid) if server_pid else None
        self.rss_max = 0

    def cpu(self) -> tuple[float, float]:
        mine = self.me.cpu_times()
        theirs = self.server.cpu_times() if self.server else None
        return mine.user + mine.system, (theirs.user + theirs.system) if theirs else 0.0

    def rss(self) -> int:
        value = self.server.memory_info().rss if self.server else 0
        self.rss_max = max(self.rss_max, value)
        return value


class Window:
    """Counters at the start of the measured window, and their deltas at the end."""

    def __init__(self, shared: Shared, meter: Meter) -> None:
        self.shared = shared
        self.meter = meter
        self.t0 = time.perf_counter()
        self.delivered0 = shared.delivered
        self.wire0 = shared.wire_bytes
        self.compressed0 = shared.compressed
        self.sent0 = shared.sent
        self.cpu0 = meter.cpu()
        self.rss0 = meter.rss()
        self.cores0 = psutil.cpu_times(percpu=True)

    def result(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        cpu1 = self.meter.cpu()
        ours = cpu1[1] - self.cpu0[1]  # the server's CPU seconds (0 without a pid)
        shared = self.shared
        delivered = shared.delivered - self.delivered0
        frames = max(1, delivered)
        return {
            "elapsed_s": elapsed,
            "deliveries_per_s": delivered / elapsed,
            "wire_bytes_per_delivery": (shared.wire_bytes - self.wire0) / frames,
            "compressed_fraction": (shared.compressed - self.compressed0) / frames,
            "messages_per_s": (shared.sent - self.sent0) / elapsed,
            "loadgen_cpu": (cpu1[0] - self.cpu0[0]) / elapsed,
            "server_cpu": (cpu1[1] - self.cpu0[1]) / elapsed if self.meter.server else None,
            "core_busy": (busy := core_busy(self.cores0, psutil.cpu_times(percpu=True))),
            "other_cpu": round(sum(busy) - (cpu1[0] - self.cpu0[0] + ours) / elapsed, 3),
            "server_rss_mb_start": self.rss0 / 2**20,
            "server_rss_mb_end": self.meter.rss() / 2**20,
            "server_rss_mb_max": self.meter.rss_max / 2**20,
        }


def core_busy(before: list[Any], after: list[Any]) -> list[float]:
    """Busy fraction of every core (any process, softirq included) between two samples."""
    out = []
    for a, b in zip(before, after, strict=True):
        total = sum(b) - sum(a)
        idle = (b.idle + b.iowait) - (a.idle + a.iowait)
        out.append(round(1 - idle / total, 3) if total > 0 else 0.0)
    return out


async def sample_rss(meter: Meter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            meter.rss()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def run_closed(clients: Clients, meter: Meter) -> dict[str, Any]:
    shared = clients.shared
    scenario = shared.scenario
    assert clients.sender is not None
    shared.sending = True
    for _ in range(scenario.window):
        clients.sender.publish()
    await asyncio.sleep(scenario.warmup)
    window = Window(shared, meter)
    shared.measuring = True
    await asyncio.sleep(scenario.duration)
    shared.measuring = False
    result = window.result()
    shared.sending = False
    result["window"] = scenario.window
    result["latency"] = latency_summary(shared.latencies)
    result["stalled"] = shared.completed == 0
    return result


async def open_loop_sender(clients: Clients, stop_at: float) -> None:
    """Publish at a fixed rate on an absolute schedule (no drift), until ``stop_at``."""
    assert clients.sender is not None
    loop = asyncio.get_running_loop()
    interval = 1.0 / clients.shared.scenario.rate
    next_at = loop.time()
    while next_at < stop_at and clients.shared.sending:
        clients.sender.publish()
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def run_open(clients: Clients, meter: Meter) -> dict[str, Any]:
    shared = clients.shared
    scenario = shared.scenario
    loop = asyncio.get_running_loop()
    for slow in clients.slow:
        assert slow.transport is not None
        slow.transport.underlying_transport.pause_reading()
    shared.sending = True
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(meter, stop))
    await asyncio.sleep(scenario.warmup)
    window = Window(shared, meter)
    shared.measuring = True
    await open_loop_sender(clients, loop.time() + scenario.duration)
    result = window.result()
    sent = shared.sent
    expected = sent * len(clients.receivers)

    def received() -> int:
        return sum(r.count for r in clients.receivers)

    await wait_until(shared, lambda: received() >= expected, scenario.drain)
    shared.measuring = False
    shared.sending = False
    result.update(
        rate=scenario.rate,
        sent=sent,
        expected=expected,
        received=received(),
        losses=expected - received(),
        loss_ratio=(expected - received()) / expected if expected else 0.0,
        latency=latency_summary(shared.latencies),
        server_rss_mb_max=meter.rss_max / 2**20,
        **sequence_check(clients.receivers, sent),
    )
    result["slow"] = await release_slow(clients)
    stop.set()
    await sampler
    return result


def sequence_check(receivers: Sequence[Receiver], sent: int) -> dict[str, int]:
    """What the receivers' sequence numbers say: messages some receiver never got."""
    missing = [r.gaps + max(0, sent - r.next_seq) for r in receivers]
    return {
        "missing": sum(missing),
        "members_complete": sum(1 for m in missing if m == 0),
        "members_disconnected": sum(1 for r in receivers
                                    if r.transport is None or r.transport.is_disconnected),
        "out_of_order": sum(r.out_of_order for r in receivers),
    }


async def release_slow(clients: Clients) -> list[dict[str, Any]]:
    """Let the slow receivers read again and see how the server ended them (e.g. 4008)."""
    out = []
    for slow in clients.slow:
        assert slow.transport is not None
        slow.transport.underlying_transport.resume_reading()
    deadline = time.monotonic() + clients.shared.scenario.drain
    for slow in clients.slow:
        assert slow.transport is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                slow.transport.wait_disconnected(), max(0.1, deadline - time.monotonic())
            )
        out.append(
            {
                "close_code": slow.close_code,
                "disconnected": slow.transport.is_disconnected,
                "received_after_go": slow.count,
            }
        )
    return out


class Gate:
    """``Scenario.gate``: the parent process (``bench/soak.py``) starts the measured part
    and ends the run, through this process's stdin and stdout. Without it, nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    async def opened(self) -> None:
        """Print ``ready`` and wait for the parent's go (a line on stdin)."""
        if self.enabled:
            await self.say("ready")

    async def report(self, result: dict[str, Any]) -> None:
        """Print the result and wait for the parent's end (a line, or stdin closed): the
        connections stay open while it reads the server's counters."""
        if self.enabled:
            await self.say(json.dumps({**result, "ok": True}))

    @staticmethod
    async def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run_messages(url: str, scenario: Scenario, meter: Meter) -> dict[str, Any]:
    shared = Shared(scenario)
    clients = Clients(url, shared)
    gate = Gate(scenario.gate)
    t0 = time.perf_counter()
    try:
        await clients.connect_receivers(scenario.n)
        for _ in range(scenario.slow):
            clients.slow.append(await clients.connect_receiver(sampled=False, slow=True))
        await clients.connect_sender()
        connect_s = time.perf_counter() - t0
        await barrier(clients)
        await gate.opened()
        runner = run_closed if scenario.kind == "closed" else run_open
        result = await runner(clients, meter)
        result["connect_s"] = connect_s
        result["deflate_negotiated"] = sum(bool(r.negotiated) for r in clients.receivers)
        result["unexpected_frames"] = shared.unexpected
        result["errors"] = shared.errors
        await gate.report(result)
        return result
    finally:
        clients.close()


class Churner(WSListener):
    """A short-lived client: ready on the welcome frame (envelope) or the handshake (raw)."""

    def __init__(self, welcome: bool) -> None:
        super().__init__()
        self.welcome = welcome
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        if not self.welcome:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is CLOSE:
            transport.disconnect()
        elif not self.ready.done():
            self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))


async def churn_once(url: str, welcome: bool) -> None:
    listener = Churner(welcome)
    transport, _ = await ws_connect(lambda: listener, url, websocket_handshake_timeout=10)
    try:
        await asyncio.wait_for(listener.ready, 10)
        transport.send_close(WSCloseCode.OK)
        await asyncio.wait_for(transport.wait_disconnected(), 10)
    finally:
        transport.disconnect(graceful=False)


async def run_churn(url: str, scenario: Scenario, meter: Meter) -> dict[str, Any]:
    welcome = scenario.protocol == "envelope"
    cycles = 0
    failures: list[str] = []
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + scenario.duration

    async def worker() -> None:
        nonlocal cycles
        while loop.time() < stop_at:
            try:
                await churn_once(url, welcome)
                cycles += 1
            except (OSError, TimeoutError, ConnectionError, Exception) as exc:
                failures.append(repr(exc)[:200])
                await asyncio.sleep(0.01)

    window = Window(Shared(scenario), meter)
    await asyncio.gather(*(worker() for _ in range(scenario.concurrency)))
    result = window.result()
    del result["deliveries_per_s"], result["messages_per_s"]
    result.update(
        cycles=cycles,
        churn_per_s=2 * cycles / result["elapsed_s"],
        failures=len(failures),
        errors=failures[:5],
    )
    return result


class Idler(Churner):
    """A held idle client (``hold``): notes it if the server closes it."""

    def __init__(self, welcome: bool, dropped: dict[str, int]) -> None:
        super().__init__(welcome)
        self.dropped = dropped  # close code (or "no close frame") -> idle clients lost
        self.closing = False  # we closed it (a reconnect, the end of the run)
        self.close_code: int | None = None
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        super().on_ws_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is CLOSE:
            payload = frame.get_payload_as_bytes()
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        super().on_ws_frame(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self.ready.done() and not self.closing:
            key = str(self.close_code) if self.close_code is not None else "no close frame"
            self.dropped[key] = self.dropped.get(key, 0) + 1

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_disconnected


class Holder:
    """The idle clients of ``hold``: slot ``i`` is in room ``<url>-<i % rooms>``."""

    def __init__(self, url: str, scenario: Scenario) -> None:
        self.url = url
        self.scenario = scenario
        self.welcome = scenario.protocol == "envelope"
        self.slots: list[Idler | None] = [None] * scenario.n
        self.dropped: dict[str, int] = {}
        self.reconnects = 0
        self.failures: list[str] = []
        self.reconnect_ms: array[int] = array("q")

    def room_url(self, i: int) -> str:
        rooms = self.scenario.rooms
        return f"{self.url}-{i % rooms}" if rooms > 0 else self.url

    async def connect(self, i: int) -> None:
        listener = Idler(self.welcome, self.dropped)
        offer = DEFLATE_OFFER if self.scenario.deflate else None
        transport, _ = await ws_connect(lambda: listener, self.room_url(i),
                                        websocket_handshake_timeout=60, extra_headers=offer)
        try:
            await asyncio.wait_for(listener.ready, 60)
        except BaseException:
            listener.closing = True
            transport.disconnect(graceful=False)
            raise
        self.slots[i] = listener

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(self.scenario.concurrency)

        async def one(i: int) -> None:
            async with gate:
                await self.connect(i)

        await asyncio.gather(*(one(i) for i in range(self.scenario.n)))

    async def reconnect(self, i: int) -> None:
        """Close slot ``i`` (1000, with the close handshake) and connect it again."""
        started = time.perf_counter_ns()
        old, self.slots[i] = self.slots[i], None
        try:
            if old is not None and old.alive:
                assert old.transport is not None
                old.closing = True
                old.transport.send_close(WSCloseCode.OK)
                await asyncio.wait_for(old.transport.wait_disconnected(), 10)
            await self.connect(i)
        except Exception as exc:
            if len(self.failures) < 5:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
            else:
                self.failures.append("")
            return
        self.reconnects += 1
        self.reconnect_ms.append(time.perf_counter_ns() - started)

    async def churn(self, duration: float) -> None:
        """``reconnect_share`` of the slots per minute, one every ``60 / (share * n)`` s on
        an absolute schedule, in slot order (over and over), until ``duration`` is over."""
        per_minute = self.scenario.reconnect_share * self.scenario.n
        if per_minute <= 0:
            await asyncio.sleep(duration)
            return
        loop = asyncio.get_running_loop()
        interval = 60.0 / per_minute
        stop_at = loop.time() + duration
        next_at = loop.time() + interval / 2
        pending: set[asyncio.Task[None]] = set()
        k = 0
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            task = asyncio.ensure_future(self.reconnect(k % self.scenario.n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
            next_at += interval
        await asyncio.sleep(max(0.0, stop_at - loop.time()))
        if pending:
            await asyncio.wait(pending, timeout=30)

    def close(self) -> None:
        for listener in self.slots:
            if listener is not None and listener.transport is not None:
                listener.closing = True
                with contextlib.suppress(Exception):
                    listener.transport.disconnect(graceful=False)


async def run_hold(url: str, scenario: Scenario, meter: Meter) -> dict[str, Any]:
    """``n`` idle clients for ``duration`` while ``reconnect_share`` of them per minute
    reconnect (``bench/soak.py`` runs several of these beside an open-loop room)."""
    holder = Holder(url, scenario)
    gate = Gate(scenario.gate)
    try:
        t0 = time.perf_counter()
        await holder.connect_all()
        connect_s = time.perf_counter() - t0
        await gate.opened()
        await holder.churn(scenario.duration)
        took = sorted(holder.reconnect_ms)
        result = {
            "connect_s": connect_s,
            "reconnects": holder.reconnects,
            "reconnect_failures": len(holder.failures),
            "reconnect_errors": [e for e in holder.failures if e],
            "reconnect_p50_ms": percentile(took, 50) / 1e6,
            "reconnect_p99_ms": percentile(took, 99) / 1e6,
            "reconnect_max_ms": (took[-1] / 1e6) if took else float("nan"),
            "idle_dropped": dict(holder.dropped),
            "connected_at_end": sum(1 for s in holder.slots if s is not None and s.alive),
            "loadgen_rss_mb": psutil.Process().memory_info().rss / 2**20,
        }
        await gate.report(result)
        return result
    finally:
        holder.close()


async def probe_server(meter: Meter, directory: str, k: int) -> None:
    """Ask the server for heap probe ``k`` (``SIGUSR1``, see ``bench/servers/_common.py``)
    and wait until it is written."""
    if not directory or meter.server is None:
        return
    meter.server.send_signal(signal.SIGUSR1)
    done = pathlib.Path(directory, f"done-{k}")
    deadline = time.monotonic() + 600
    while not done.exists():  # noqa: ASYNC240 - a file poll, off the measured path
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server wrote no heap probe {k}")
        await asyncio.sleep(0.2)


async def run_idle(url: str, scenario: Scenario, meter: Meter) -> dict[str, Any]:
    """Server RSS delta per connection: 10 warm-up connections, then ``n`` more, idle.

    With ``probe_dir`` the server also writes a heap probe after the warm-up (0) and after
    the ``n`` connections (1)."""
    shared = Shared(scenario)
    warm = Clients(url, shared)
    clients = Clients(url, shared)
    try:
        await warm.connect_receivers(10)
        await asyncio.sleep(0.5)
        await probe_server(meter, scenario.probe_dir, 0)
        rss0 = meter.rss()
        t0 = time.perf_counter()
        await clients.connect_receivers(scenario.n)
        connect_s = time.perf_counter() - t0
        await asyncio.sleep(max(1.0, scenario.warmup))
        rss1 = meter.rss()
        await probe_server(meter, scenario.probe_dir, 1)
        return {
            "connect_s": connect_s,
            "connects_per_s": scenario.n / connect_s,
            "server_rss_mb_start": rss0 / 2**20,
            "server_rss_mb_end": rss1 / 2**20,
            "kb_per_connection": (rss1 - rss0) / 1024 / scenario.n,
            "loadgen_rss_mb": psutil.Process().memory_info().rss / 2**20,
            "deflate_negotiated": sum(bool(r.negotiated) for r in clients.receivers),
        }
    finally:
        clients.close()
        warm.close()


def scenario_url(url: str, scenario: Scenario) -> str:
    if not scenario.batch:
        return url
    return url + ("&" if "?" in url else "?") + "batch=1"


async def run_async(url: str, scenario: Scenario, server_pid: int | None = None) -> dict[str, Any]:
    """Run one scenario against a room URL; returns a flat dict of results."""
    meter = Meter(server_pid)
    runners = {"closed": run_messages, "open": run_messages, "idle": run_idle, "churn": run_churn,
               "hold": run_hold}
    target = scenario_url(url, scenario)
    result: dict[str, Any] = {"url": target, **dataclasses.asdict(scenario)}
    try:
        runner = runners[scenario.kind]
        result.update(await asyncio.wait_for(runner(target, scenario, meter), scenario.timeout))
        result["ok"] = True
    except Exception as exc:
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(url: str, scenario: Scenario, server_pid: int | None = None) -> dict[str, Any]:
    """Blocking wrapper of :func:`run_async` (on uvloop when available)."""
    raise_fd_limit()
    try:
        import uvloop

        return uvloop.run(run_async(url, scenario, server_pid))
    except ImportError:
        return asyncio.run(run_async(url, scenario, server_pid))


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, Scenario, int | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("url", help="room URL, e.g. ws://127.0.0.1:8000/ws/bench")
    p.add_argument("--server-pid", type=int, default=None, help="measure this process's CPU/RSS")
    for field in dataclasses.fields(Scenario):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default), default=default)
    args = p.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Scenario)}
    return args.url, Scenario(**values), args.server_pid


def main(argv: Sequence[str] | None = None) -> int:
    url, scenario, server_pid = parse_args(argv)
    result = run(url, scenario, server_pid)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

