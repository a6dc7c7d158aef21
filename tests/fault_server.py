"""A small OpenAI-compatible server on 127.0.0.1 that misbehaves on purpose (raw asyncio, full control).

Base URL ``http://127.0.0.1:PORT/<fault>/<key>/v1``; ``key`` separates counters between tests. Faults:

    ok            streams (or returns) REPLY
    429:N         answers 429 with retry-after 0 to the first N requests, then ok
    500           always 500;  500:N  the first N requests, then ok
    reset         closes the connection without answering;  reset:N  the first N, then ok
    cut           sends part of a sentence, then drops the connection;  cut:N  the first N, then ok
    malformed     a stream chunk that is not JSON
    badjson       a non-streamed body that is not JSON
    stall         sends the headers and one chunk, then nothing for 60 s
    echo          replies "Echo: <the last user message>. Done."
    slow          streams REPLY a word every 100 ms; ``completed`` / ``aborted`` count how streams ended
    replay        streams ``replies[last user message]`` piece by piece, ``piece_delay`` seconds apart (a
                  server that generates many answers at once at a fixed pace, e.g. vLLM, for load tests)
    leak          500 whose body echoes the Authorization header, an internal URL and a file path
    nonsse        200 with a JSON body (not a stream) to a streaming request
    empty         200 stream with no chunk before [DONE]
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REPLY = "The sky is blue. Water is wet. Grass is green."


class FaultServer:
    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.requests: list[dict[str, Any]] = []
        self.completed: dict[str, int] = defaultdict(int)
        self.aborted: dict[str, int] = defaultdict(int)
        #: ``replay``: the pieces to stream for a last user message, and the pause between pieces
        self.replies: dict[str, list[str]] = {}
        self.piece_delay = 0.01
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------------------------------ plumbing

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def url(self, fault: str, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/{key}/v1"

    # ------------------------------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._respond(method, path, json.loads(body or b"{}"), writer, headers)
                if not keep:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    async def _respond(
        self, method: str, path: str, body: dict[str, Any], writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bool:
        parts = path.strip("/").split("/")
        fault, key = parts[0], parts[1]
        name, _, limit = fault.partition(":")
        counter = f"{fault}/{key}"
        self.counts[counter] += 1
        self.requests.append({"path": path, "body": body})
        active = not limit or self.counts[counter] <= int(limit)
        if name == "429" and active:
            return self._plain(writer, 429, b'{"error": "slow down"}', {"retry-after": "0"})
        if name == "500" and active:
            return self._plain(writer, 500, b'{"error": "boom"}')
        if name == "reset" and active:
            writer.transport.abort()
            return False
        if name == "badjson":
            return self._plain(writer, 200, b"{not json")
        if name == "leak":  # an upstream that echoes the caller's key, its own URL and a traceback's paths
            echo = {"error": f"bad auth {headers.get('authorization')} at http://10.0.0.7:9000/internal "
                             'File "/srv/upstream/secret_app.py", line 12'}  # fmt: skip
            return self._plain(writer, 500, json.dumps(echo).encode(), {"x-should-retry": "false"})
        if name == "nonsse":  # a 200 that is not a stream, to a streaming request
            return self._plain(writer, 200, b'{"status": "ok"}')
        if name == "empty":  # a stream with nothing in it
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            self._chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        stream = bool(body.get("stream"))
        text = REPLY
        if name == "echo":
            users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
            text = f"Echo: {users[0] if users else ''}. Done."
        if not stream:
            reply = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
            return self._plain(writer, 200, json.dumps(reply).encode())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        words = text.split(" ")
        pieces = [word + (" " if index < len(words) - 1 else "") for index, word in enumerate(words)]
        if name == "replay":
            users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
            pieces = self.replies.get(users[-1] if users else "", pieces)
        delay = {"slow": 0.1, "replay": self.piece_delay}.get(name, 0.002)
        for index, text in enumerate(pieces):
            if writer.transport.is_closing():
                self.aborted[counter] += 1
                return False
            if name == "cut" and active and index == 5:  # mid-sentence ("Water is")
                await writer.drain()
                writer.transport.abort()
                return False
            if name == "malformed" and index == 2:
                self._chunk(writer, b"data: {this is not json\n\n")
                continue
            if name == "stall" and index == 1:
                await writer.drain()
                await asyncio.sleep(60)
                return False
            delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            self._chunk(writer, f"data: {json.dumps(delta)}\n\n".encode())
            try:
                await writer.drain()
            except ConnectionError:
                self.aborted[counter] += 1
                return False
            await asyncio.sleep(delay)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self._chunk(writer, f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.completed[counter] += 1
        return True

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    @staticmethod
    def _plain(writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None) -> bool:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        writer.write(head.encode() + body)
        return True


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
