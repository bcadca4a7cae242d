"""A TCP proxy on 127.0.0.1 in front of DynamoDB Local: a delay line (benchmark scenario 9), and
faults on the wire (the tests: answers lost after DynamoDB applied the request, requests dropped
before it saw them, answers cut short).

The one loopback proxy of the repository, used by ``benchmarks/concurrency_async.py`` and by
``tests/test_faults.py``. With ``faults=True`` it reads each HTTP request and answer whole
(``Content-Length`` or chunked), so `LoopbackProxy.fault` can pick requests by operation
(``X-Amz-Target``) and meet them with a fault: ``drop-request`` (close the client's connection
before forwarding), ``drop-answer`` (forward, let DynamoDB apply it, close without answering),
``truncate`` (answer with the first half of the body, its ``Content-Length`` set to match, so
the client parses a cut JSON document). Without it, the delay line below needs no parsing.

Delay line (scenario 9):

DynamoDB Local answers in about a millisecond, so a client that waits on it one request at a
time loses little; against AWS each request also pays a network round trip, and that wait is
what concurrency overlaps. `LoopbackProxy` puts the wait back: it forwards each connection to the
upstream DynamoDB Local and holds every chunk read from the client for ``delay_s`` before
writing it upstream. Responses pass through at once.

It is a *delay line*, not a per-read sleep: each chunk leaves ``delay_s`` after it arrived, in
order, and chunks that arrived 0.1 ms apart leave 0.1 ms apart. botocore writes a request's
headers and its body in two ``send`` calls, which may reach the proxy as one read or two; a
delay line adds ``delay_s`` to the request either way, where sleeping ``delay_s`` per read
would add it twice to some requests and queue a connection's reads behind each other. It needs
no HTTP parsing, and a keep-alive connection's next request is delayed like the first.

The proxy is an asyncio streams server in a child process of its own (``where="process"``,
the default) or in a thread of the calling process (``where="thread"``). In a thread it shares
the GIL with the client it delays and forwards late when the client is busy, so the network it
models slows down as the client works harder (native async at 500 sessions: a median of 31-32
ms added instead of 16 as a process; docs/benchmarks.md, scenario 9).

It is bounded: it listens only on 127.0.0.1, forwards only to a loopback upstream, refuses
connections beyond ``max_connections``, and stops by itself after ``lifetime_s`` or when its
parent goes away. It counts connections, chunks, the delay it actually added, and its CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal
from urllib.parse import urlsplit

READ_SIZE: Final = 65536
START_TIMEOUT_S: Final = 60.0


@dataclass
class ProxyStats:
    """What the proxy did since it started (or since the last `LoopbackProxy.reset`)."""

    connections: int = 0
    """Client connections accepted (each one opens one upstream connection)."""
    refused: int = 0
    """Connections closed at once because ``max_connections`` were open."""
    peak_open: int = 0
    """Most connections open at the same time."""
    chunks: int = 0
    """Client reads forwarded upstream (a request is one or more of them)."""
    added_ms: list[float] = field(default_factory=list)
    """The delay each chunk actually got, arrival to forwarding, in ms."""
    cpu_s: float = 0.0
    """CPU time of the proxy (its process, or its thread)."""
    requests: dict[str, int] = field(default_factory=dict)
    """HTTP requests forwarded, by operation (with ``faults=True`` only)."""
    faults: dict[str, int] = field(default_factory=dict)
    """Faults injected, by kind (with ``faults=True`` only)."""


FAULT_KINDS: Final = ("drop-request", "drop-answer", "truncate")


def loopback_address(url: str) -> tuple[str, int]:
    """``url``'s host and port if it is a loopback address; else ValueError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or parts.port is None:
        raise ValueError(f"the delay proxy forwards only to 127.0.0.1:<port>, not {url}")
    return host, parts.port


class LoopbackProxy:
    """``with LoopbackProxy("http://127.0.0.1:8000", 0.010) as proxy: proxy.endpoint_url``."""

    def __init__(
        self,
        upstream_url: str,
        delay_s: float,
        *,
        where: Literal["process", "thread"] = "process",
        max_connections: int = 4096,
        lifetime_s: float = 3600.0,
        faults: bool = False,
    ) -> None:
        self.faults = faults
        self.upstream = loopback_address(upstream_url)
        self.delay_s = delay_s
        self.where = where
        self.max_connections = max_connections
        self.lifetime_s = lifetime_s
        self.port = 0
        self._to_proxy: IO[bytes] | None = None
        self._from_proxy: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackProxy:
        settings = [str(self.upstream[1]), repr(self.delay_s), str(self.max_connections)]
        settings += [repr(self.lifetime_s), "faults" if self.faults else "plain"]
        if self.where == "process":
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *settings],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self._to_proxy, self._from_proxy = self._process.stdin, self._process.stdout
        else:
            commands, to_proxy = os.pipe()
            from_proxy, answers = os.pipe()
            self._to_proxy = os.fdopen(to_proxy, "wb", buffering=0)
            self._from_proxy = os.fdopen(from_proxy, "rb")
            self._thread = threading.Thread(
                target=serve, args=(*settings, commands, answers), name="delay-proxy", daemon=True
            )
            self._thread.start()
        try:
            self.port = int(self._answer(START_TIMEOUT_S)["ready"])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> ProxyStats:
        """The stats so far; start counting afresh."""
        self._ask("reset")
        return ProxyStats(**self._answer(30.0))

    def fault(
        self, operation: str, kind: str, *, rate: float = 1.0, limit: int = 1, seed: int = 0
    ) -> None:
        """From now on, meet each request of ``operation`` (``*``: any) with fault ``kind``
        (one of `FAULT_KINDS`) with probability ``rate``, at most ``limit`` times; ``kind``
        ``none`` removes the rule. Needs ``faults=True``."""
        if not self.faults:
            raise RuntimeError("this proxy was started without faults=True")
        if kind not in (*FAULT_KINDS, "none"):
            raise ValueError(f"unknown fault {kind!r}")
        rule = {"operation": operation, "kind": kind, "rate": rate, "limit": limit, "seed": seed}
        self._ask("fault " + json.dumps(rule))
        self._answer(30.0)

    def stop(self) -> None:
        """Stop listening, close every connection, end the proxy's process or thread."""
        with contextlib.suppress(OSError, RuntimeError):  # it has ended already
            self._ask("stop")
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()  # our own child, stuck: end it
                self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)
        for pipe in (self._to_proxy, self._from_proxy):
            if pipe is not None:
                pipe.close()
        self._process = self._thread = self._to_proxy = self._from_proxy = None

    def _ask(self, command: str) -> None:
        if self._to_proxy is None:
            raise RuntimeError("the delay proxy is not running")
        self._to_proxy.write(command.encode() + b"\n")
        self._to_proxy.flush()

    def _answer(self, timeout: float) -> dict[str, Any]:
        pipe = self._from_proxy
        if pipe is None:
            raise RuntimeError("the delay proxy is not running")
        ready, _, _ = select.select([pipe], [], [], timeout)
        line = pipe.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the delay proxy did not answer within {timeout:g} s")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the delay proxy failed: {answer['error']}")
        return answer


# -- the proxy's side (a child process, or a thread) --------------------------------------------


def serve(
    port: str,
    delay_s: str,
    max_connections: str,
    lifetime_s: str,
    mode: str = "plain",
    commands: int = 0,
    answers: int = 1,
) -> None:
    """Proxy to 127.0.0.1:``port`` until told to stop (a "stop" line on ``commands``, or its
    end) or ``lifetime_s`` passes; answer "reset" lines with the stats, as JSON, on
    ``answers``."""
    upstream = ("127.0.0.1", int(port))
    proxy = Proxy(upstream, float(delay_s), int(max_connections), commands, answers)
    proxy.inspect = mode == "faults"
    try:
        asyncio.run(proxy.run(float(lifetime_s)))
    except Exception as exc:
        with contextlib.suppress(OSError):
            proxy.answer({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        if threading.current_thread() is not threading.main_thread():
            os.close(commands)  # the thread's pipe ends; a process's are its stdin and stdout
            os.close(answers)


class Proxy:
    """The server: one pair of streams per connection, and the delay line."""

    def __init__(
        self,
        upstream: tuple[str, int],
        delay_s: float,
        max_connections: int,
        commands: int,
        answers: int,
    ) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.max_connections = max_connections
        self.commands = commands
        self.answers = answers
        self.pending = b""
        self.stats = ProxyStats()
        self.open = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.cpu_at_reset = 0.0
        self.stop = asyncio.Event()
        self.threaded = threading.current_thread() is not threading.main_thread()
        self.inspect = False
        """Read each HTTP request and answer whole (needed by faults)."""
        self.rules: dict[str, dict[str, Any]] = {}

    def cpu(self) -> float:
        return time.thread_time() if self.threaded else time.process_time()

    async def run(self, lifetime_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.cpu_at_reset = self.cpu()
        server = await asyncio.start_server(self.connection, "127.0.0.1", 0, backlog=1024)
        loop.add_reader(self.commands, self.command)
        self.answer({"ready": server.sockets[0].getsockname()[1]})
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), lifetime_s)
            loop.remove_reader(self.commands)
            server.close()
        # Closing the sockets ends every connection's tasks (cancelling them instead makes
        # asyncio log each one as an unhandled error).
        for writer in list(self.writers):
            writer.close()
        deadline = time.monotonic() + 5
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def command(self) -> None:
        """Answer the owner's lines: "reset" (send the stats, start afresh) or "stop"."""
        try:
            data = os.read(self.commands, 4096)
        except OSError:
            data = b""
        if not data:  # the owner went away
            self.stop.set()
            return
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            if line.startswith(b"fault "):
                rule = json.loads(line[6:])
                if rule["kind"] == "none":
                    self.rules.pop(rule["operation"], None)
                else:
                    rule["left"] = rule["limit"]
                    rule["random"] = random.Random(rule["seed"])
                    self.rules[rule["operation"]] = rule
                self.answer({"ok": True})
            elif line == b"reset":
                cpu = self.cpu()
                stats, self.stats = self.stats, ProxyStats(peak_open=self.open)
                stats.cpu_s, self.cpu_at_reset = cpu - self.cpu_at_reset, cpu
                self.answer(asdict(stats))
            else:
                self.stop.set()

    def answer(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.answers, data) :]

    async def connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        if self.open >= self.max_connections:
            self.stats.refused += 1
            client_w.close()
            return
        self.open += 1
        self.writers.add(client_w)
        self.stats.connections += 1
        self.stats.peak_open = max(self.stats.peak_open, self.open)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
            self.writers.add(upstream_w)
            for writer in (client_w, upstream_w):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.inspect:
                await self.inspected(client_r, client_w, upstream_r, upstream_w)
            else:
                await asyncio.gather(
                    self.delayed(client_r, upstream_w), self.passed(upstream_r, client_w)
                )
        except (OSError, asyncio.IncompleteReadError):
            pass  # a reset connection: the client sees it and retries
        finally:
            self.open -= 1
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self.writers.discard(writer)
                    writer.close()

    async def delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward each chunk ``delay_s`` after it was read, in order."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                arrived, chunk = await line.get()
                if writer.is_closing():
                    return
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = arrived + self.delay_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.stats.added_ms.append((loop.time() - arrived) * 1000)
                self.stats.chunks += 1
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while True:
                chunk = await reader.read(READ_SIZE)
                line.put_nowait((loop.time(), chunk))
                if not chunk:
                    break
            await sender
        finally:
            sender.cancel()

    async def passed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward the upstream's answers at once; close the client's side when it ends."""
        while chunk := await reader.read(READ_SIZE):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    # -- faults: one HTTP exchange at a time -----------------------------------------------------

    def pick(self, operation: str) -> str | None:
        """The fault this request of ``operation`` meets, if any."""
        rule = self.rules.get(operation) or self.rules.get("*")
        if rule is None or rule["left"] <= 0 or rule["random"].random() >= rule["rate"]:
            return None
        rule["left"] -= 1
        kind: str = rule["kind"]
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        return kind

    async def inspected(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
    ) -> None:
        """Forward requests and answers one exchange at a time, meeting the faults asked for."""
        while True:
            try:
                head, headers, body = await read_message(client_r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client closed its connection
            operation = headers.get("x-amz-target", "").rpartition(".")[2]
            self.stats.requests[operation] = self.stats.requests.get(operation, 0) + 1
            kind = self.pick(operation)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if kind == "drop-request":
                return  # the caller closes the client's connection
            upstream_w.write(head + body)
            await upstream_w.drain()
            head, headers, body = await read_message(upstream_r)
            if kind == "drop-answer":
                return  # applied upstream; the client never hears of it
            if kind == "truncate":
                body = body[: len(body) // 2]
                head = with_length(head, len(body))
            client_w.write(head + body)
            await client_w.drain()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP request or answer: its head (re-framed with ``Content-Length`` if it was
    chunked), its headers (lower-case names) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if size == 0:
                break
        kept = [
            line
            for line in head.decode("latin-1").split("\r\n")
            if not line.lower().startswith("transfer-encoding:")
        ]
        head = "\r\n".join(kept).encode("latin-1")
        return with_length(head, len(body)), headers, body
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head, headers, body


def with_length(head: bytes, length: int) -> bytes:
    """``head`` with its ``Content-Length`` set to ``length`` (and no CRC32 of the old body)."""
    lines = [
        line
        for line in head.decode("latin-1").split("\r\n")
        if line and not line.lower().startswith(("content-length:", "x-amz-crc32:"))
    ]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


if __name__ == "__main__":  # the child process of `LoopbackProxy` (where="process")
    serve(*sys.argv[1:6])
