"""A TCP proxy in front of a real server that misbehaves on purpose, to test RemoteBackend's retries.

- `listen_after_s`: the port refuses connections until then (a server that starts late);
- `drop_response_to`: the first request whose head contains this byte string reaches the server,
  but its response is thrown away and the connection closed (a connection dropped after the
  server did the work: the retry must not apply it twice).
"""

from __future__ import annotations

import asyncio
import socket
import threading


class FlakyProxy:
    def __init__(self, target_port: int, listen_after_s: float = 0.0, drop_response_to: bytes | None = None):
        self.target_port = target_port
        self.listen_after_s = listen_after_s
        self.drop_response_to = drop_response_to
        self.dropped_responses = 0
        self.connections = 0
        # bound now and kept: the port is ours from here on, and refuses connections until it listens
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flaky-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> "FlakyProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        return self

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()  # closes the socket too
            else:
                self._socket.close()  # stopped before it listened
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # open connections' pumps
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _listen(self) -> None:
        await asyncio.sleep(self.listen_after_s)
        self._server = await asyncio.start_server(self._handle, sock=self._socket)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        doomed = asyncio.Event()  # set once this connection carries the request whose answer is lost

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                if self.drop_response_to is not None and self.dropped_responses == 0 and self.drop_response_to in data:
                    doomed.set()
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                if doomed.is_set():
                    self.dropped_responses += 1
                    break  # the server did the work; the client never hears of it
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()
            server_writer.close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_writer.close()
        server_writer.close()
