# The seed's FastAPI WebSocket endpoint, put behind wsgate: the token check is gone.
# wsgate verified the client before this app ever saw the connection, and passes who it is
# in X-Wsgate-Sub (percent-encoded where a header could not carry it exactly: decode it),
# plus X-Wsgate-Session and X-Wsgate-Claims (base64url JSON). It closes both
# sides when the token expires or is revoked. Run it where only wsgate can reach it:
#   uvicorn app:app --host 127.0.0.1 --port 9000
# and point a proxy endpoint at it (README: "Put wsgate in front of your FastAPI app").
from urllib.parse import unquote

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket):
    user = unquote(websocket.headers["x-wsgate-sub"])
    await websocket.accept()
    await websocket.send_text(f"Welcome, {user}!")
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
