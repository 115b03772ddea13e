"""A strict WebSocket echo server (Python `websockets`): the backend the Autobahn cases reach
through a wsgate `proxy` endpoint. It answers pings itself, echoes every message whole and
checks the protocol on its own side, so any frame wsgate adds, drops or doubles shows up as a
failed case. Usage: python3 echo_upstream.py PORT"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    # Many cases end with a protocol error on purpose: a closed connection is the normal end.
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    # No size cap (case 9.* sends 16 MiB), no compression (wsgate offers none), no pings of
    # its own (they would add frames the cases do not expect).
    async with serve(
        echo, "127.0.0.1", port, max_size=None, compression=None, ping_interval=None
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
