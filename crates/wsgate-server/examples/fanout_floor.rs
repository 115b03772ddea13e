//! The floor of fan-out on this machine (issue 14): the least a server can do to deliver one
//! small WebSocket frame to N connected sockets — one `write` per socket of a frame encoded
//! once, from one thread, no tasks woken, no queues, no framing library.
//!
//! It speaks just enough of wsgate's pubsub protocol for `examples/fanout.rs` to drive it
//! unchanged: a WebSocket handshake (no authentication), `welcome`, one `subscribe` answered
//! `subscribed`, and `POST /api/publish {"channel","data"}` answered after the frame was
//! written to every socket. So the same tool, on the same cores, times wsgate and the floor:
//!
//! ```sh
//! taskset -c 0 target/release/examples/fanout_floor --port 18410 &
//! taskset -c 1 target/release/examples/fanout --url ws://127.0.0.1:18410/ws --secret s \
//!     --admin-key k --connections 10000 --publishes 20
//! ```
//! Not a server: no input is validated beyond what the tool sends. Loopback only.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// An unmasked server text frame (payloads under 64 KiB).
fn text_frame(payload: &str) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(len + 4);
    f.push(0x81);
    if len < 126 {
        f.push(len as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(payload.as_bytes());
    f
}

/// Reads until the end of an HTTP head; the head and whatever followed it.
async fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

async fn websocket(mut s: TcpStream, head: &str, subs: Subscribers) -> Option<()> {
    let key = header(head, "sec-websocket-key")?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    s.write_all(answer.as_bytes()).await.ok()?;
    s.write_all(&text_frame(r#"{"type":"welcome"}"#))
        .await
        .ok()?;
    // The `subscribe` frame (its content is the tool's; one read holds it).
    let mut frame = [0u8; 512];
    if s.read(&mut frame).await.ok()? == 0 {
        return None;
    }
    s.write_all(&text_frame(r#"{"type":"subscribed","channel":"bench"}"#))
        .await
        .ok()?;
    subs.lock().ok()?.push(s);
    Some(())
}

async fn publish(mut s: TcpStream, head: &str, mut body: Vec<u8>, subs: Subscribers) -> Option<()> {
    let len: usize = header(head, "content-length")?.parse().ok()?;
    while body.len() < len {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let payload = serde_json::json!({
        "type": "message", "channel": req["channel"], "from": null, "data": req["data"]
    })
    .to_string();
    let frame = text_frame(&payload);
    let delivered = {
        let subs = subs.lock().ok()?;
        let mut delivered = 0;
        for sub in subs.iter() {
            // A small frame always fits an idle socket's send buffer: one syscall, no wait.
            if sub.try_write(&frame).is_ok_and(|n| n == frame.len()) {
                delivered += 1;
            }
        }
        delivered
    };
    let body = format!(r#"{{"delivered":{delivered}}}"#);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(answer.as_bytes()).await.ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args()
        .skip_while(|a| a != "--port")
        .nth(1)
        .map_or(18410, |p| p.parse().expect("--port N"));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let subs: Subscribers = Arc::default();
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let subs = subs.clone();
        tokio::spawn(async move {
            let Some((head, rest)) = read_head(&mut s).await else {
                return;
            };
            if head.starts_with("POST") {
                publish(s, &head, rest, subs).await;
            } else {
                websocket(s, &head, subs).await;
            }
        });
    }
}
