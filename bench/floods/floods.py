#!/usr/bin/env python3
"""Hostile-input floods against a running wsgate (issue 9's findings, re-measured).

    python3 floods.py --port 8080 --pid <wsgate pid> --secret <HS256 secret> --admin-key <key>

Loopback only, bounded in count. Reports the server's RSS growth (VmRSS) and latencies for:
  failures  one refused handshake from each of N distinct 127.x.y.z addresses
            (the per-address failure table: bounded and O(1)?)
  tickets   N POST /api/tickets with one large token (outstanding tickets capped?)
  admin     N wrong admin keys from one address (limited and logged?)
No third-party packages: raw HTTP over asyncio, HS256 signed with hmac.
"""
import argparse, asyncio, base64, hashlib, hmac, json, statistics, time

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def hs256(secret, claims):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"

async def request(port, head, src=None):
    """Sends one request head; returns (status, seconds)."""
    t = time.perf_counter()
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0) if src else None)
    w.write(head.encode())
    await w.drain()
    line = await asyncio.wait_for(r.readline(), 10)
    w.close()
    try:
        await w.wait_closed()
    except Exception:
        pass
    return int(line.split()[1]), time.perf_counter() - t

async def bounded(n, concurrency, make):
    sem = asyncio.Semaphore(concurrency)
    out = [None] * n
    async def one(i):
        async with sem:
            try:
                out[i] = await make(i)
            except Exception as e:
                out[i] = (type(e).__name__, 0.0)
    await asyncio.gather(*(one(i) for i in range(n)))
    return out

def settle(pid):
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.25)
        now = rss_kib(pid)
        if abs(now - last) <= max(64, last * 0.002):
            return now
        last = now
    return last

def summary(name, results, before, after, extra=None):
    codes = {}
    for status, _ in results:
        codes[status] = codes.get(status, 0) + 1
    lat = [t for s, t in results if isinstance(s, int)]
    first, last = lat[: len(lat) // 10], lat[-(len(lat) // 10):]
    print(json.dumps({
        "flood": name, "requests": len(results), "answers": codes,
        "rss_growth_kib": after - before,
        "mean_ms_first_10pct": round(statistics.mean(first) * 1e3, 3) if first else None,
        "mean_ms_last_10pct": round(statistics.mean(last) * 1e3, 3) if last else None,
        **(extra or {}),
    }))

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--admin-key", default="")
    ap.add_argument("--addresses", type=int, default=58000)
    ap.add_argument("--tickets", type=int, default=50000)
    ap.add_argument("--guesses", type=int, default=5000)
    ap.add_argument("--only", default="failures,tickets,admin")
    a = ap.parse_args()
    only = a.only.split(",")

    if "failures" in only:
        before = settle(a.pid)
        def src(i):  # 127.1.0.1 ... distinct per request
            i += 1
            return f"127.{1 + i // 65025}.{(i // 255) % 255}.{1 + i % 255}"
        head = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        res = await bounded(a.addresses, 200, lambda i: request(a.port, head, src(i)))
        summary("failures", res, before, settle(a.pid))

    if "tickets" in only:
        now = int(time.time())
        token = hs256(a.secret, {"sub": "hoarder", "exp": now + 3600, "pad": "x" * 4000})
        head = f"POST /api/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        before = settle(a.pid)
        res = await bounded(a.tickets, 100, lambda i: request(a.port, head))
        summary("tickets", res, before, settle(a.pid), {"token_bytes": len(token)})

    if "admin" in only:
        before = settle(a.pid)
        t = time.perf_counter()
        def guess(i):
            body = '{"sub":"x"}'
            h = f"POST /api/disconnect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess-{i}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
            return request(a.port, h)
        res = await bounded(a.guesses, 50, guess)
        summary("admin", res, before, settle(a.pid), {"seconds": round(time.perf_counter() - t, 2)})

asyncio.run(main())
