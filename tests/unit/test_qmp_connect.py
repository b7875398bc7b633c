"""QMPConnection connects again when QEMU's first answer to qmp_capabilities is not its reply
(seen in the suite's runs under load), against a small QMP server on a unix socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from voidvm_server.drivers.qemu.qmp import QMPConnection

GREETING = {
    "QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}
}
STRAY = {"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}


def send(writer: asyncio.StreamWriter, message: dict[str, object]) -> None:
    writer.write(json.dumps(message).encode() + b"\r\n")


async def test_a_failed_negotiation_is_tried_once_more(tmp_path: Path) -> None:
    clients = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal clients
        clients += 1
        first = clients == 1
        send(writer, GREETING)
        pending = ""
        while chunk := await reader.read(4096):
            pending += chunk.decode()
            while pending.strip():  # QMP is a stream of JSON values, not of lines
                pending = pending.lstrip()
                request, end = json.JSONDecoder().raw_decode(pending)
                pending = pending[end:]
                if first and request["execute"] == "qmp_capabilities":
                    send(writer, STRAY)  # not the reply
                send(writer, {"return": {"status": "running"}, "id": request.get("id")})
        writer.close()

    path = tmp_path / "qmp.sock"
    server = await asyncio.start_unix_server(serve, path=str(path))
    qmp = QMPConnection("vm-test", timeout=5)
    try:
        await qmp.connect(path, lambda name, data: None)
        assert await qmp.execute("query-status") == {"status": "running"}
        assert clients == 2
    finally:
        await qmp.close()
        server.close()
