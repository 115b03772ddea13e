//! A real upstream WebSocket server for the proxy tests, on a free loopback port (plain or
//! TLS). It reports what it saw — the handshake request, the close it got — and answers
//! commands sent as text frames:
//! `close:<code>:<reason>` closes with that code; `ping:<payload>` pings the client;
//! `flood:<MiB>` pushes that many MiB of 64 KiB binary frames; `big:<MiB>` sends one binary
//! message of that many MiB and a byte; `hold:<ms>` reads nothing for that long, then sends
//! `held`; `die` drops the TCP
//! connection without a close frame; anything else is echoed.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// What the upstream saw.
#[derive(Debug)]
pub enum Seen {
    /// A handshake: the request line's URI and the headers, as received.
    Request {
        uri: String,
        headers: Vec<(String, String)>,
    },
    /// The close frame it received (code, reason), or `None` when TCP ended without one.
    Closed(Option<(u16, String)>),
    /// A data or pong frame from the client (kind, payload as text).
    Frame(&'static str, String),
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl Upstream {
    /// Selects `select` as subprotocol when the client offers it.
    pub async fn start(select: Option<&'static str>) -> Upstream {
        Self::start_with(Select::IfOffered(select), None).await
    }

    /// A broken (or hostile) upstream: selects `protocol` whatever was offered.
    pub async fn start_selecting_unoffered(protocol: &'static str) -> Upstream {
        Self::start_with(Select::Always(protocol), None).await
    }

    /// Over TLS with the test certificate (`fixtures/upstream_cert.pem`, for localhost and
    /// 127.0.0.1, signed by `fixtures/upstream_ca.pem`).
    pub async fn start_tls(select: Option<&'static str>) -> Upstream {
        Self::start_tls_with("upstream_cert.pem", "upstream_key.pem", select).await
    }

    /// Over TLS with the fixture certificate and key named.
    pub async fn start_tls_with(cert: &str, key: &str, select: Option<&'static str>) -> Upstream {
        let cert = std::fs::read(super::fixture(cert)).unwrap();
        let key = std::fs::read(super::fixture(key)).unwrap();
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_with(Select::IfOffered(select), Some(Arc::new(config))).await
    }

    async fn start_with(select: Select, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, select, tx).await,
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, select, tx).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The next thing seen (bounded wait).
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(super::WAIT, self.seen.recv())
            .await
            .expect("the upstream saw nothing in time")
            .expect("upstream gone")
    }

    /// The next thing seen within `wait`, if anything.
    pub async fn within(&mut self, wait: std::time::Duration) -> Option<Seen> {
        tokio::time::timeout(wait, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next handshake request seen (what earlier connections did before it is skipped).
    pub async fn request(&mut self) -> (String, Vec<(String, String)>) {
        loop {
            if let Seen::Request { uri, headers } = self.next().await {
                return (uri, headers);
            }
        }
    }

    /// Waits for the upstream's connection to end; the close frame it got.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            if let Seen::Closed(c) = self.next().await {
                return c;
            }
        }
    }
}

/// Which subprotocol the upstream selects.
#[derive(Clone, Copy)]
enum Select {
    /// This one, when the client offered it.
    IfOffered(Option<&'static str>),
    /// This one, offered or not (against RFC 6455).
    Always(&'static str),
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    select: Select,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let seen = tx.clone();
    let callback = move |req: &Request, mut res: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let _ = seen.send(Seen::Request {
            uri: req.uri().to_string(),
            headers,
        });
        let offered = |want: &str| {
            req.headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == want)
        };
        let chosen = match select {
            Select::IfOffered(p) => p.filter(|p| offered(p)),
            Select::Always(p) => Some(p),
        };
        if let Some(p) = chosen {
            res.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(_) => break,
        };
        match msg {
            Message::Close(f) => {
                let _ = tx.send(Seen::Closed(
                    f.map(|f| (u16::from(f.code), f.reason.to_string())),
                ));
                // tungstenite answers; read to the end of the close handshake.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Message::Text(t) => {
                let _ = tx.send(Seen::Frame("text", t.to_string()));
                let cmd = t.as_str();
                if let Some(rest) = cmd.strip_prefix("close:") {
                    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                    let frame = CloseFrame {
                        code: CloseCode::from(code.parse::<u16>().unwrap_or(1000)),
                        reason: reason.to_owned().into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                } else if let Some(p) = cmd.strip_prefix("ping:") {
                    let _ = ws.send(Message::Ping(Bytes::from(p.to_owned()))).await;
                } else if let Some(mib) = cmd.strip_prefix("flood:") {
                    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                    for _ in 0..mib.parse::<usize>().unwrap_or(1) * 16 {
                        if ws.send(Message::Binary(chunk.clone())).await.is_err() {
                            break;
                        }
                    }
                } else if let Some(mib) = cmd.strip_prefix("big:") {
                    // One binary message of that many MiB (+1 byte).
                    let size = mib.parse::<usize>().unwrap_or(1) * 1024 * 1024 + 1;
                    let _ = ws.send(Message::Binary(Bytes::from(vec![9u8; size]))).await;
                } else if let Some(ms) = cmd.strip_prefix("hold:") {
                    let ms = ms.parse().unwrap_or(100);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    let _ = ws.send(Message::Text("held".into())).await;
                } else if cmd == "die" {
                    let _ = tx.send(Seen::Closed(None));
                    return; // dropped without a close frame
                } else {
                    let _ = ws.send(Message::Text(t)).await;
                }
            }
            Message::Binary(b) => {
                let _ = tx.send(Seen::Frame("binary", format!("{} bytes", b.len())));
                let _ = ws.send(Message::Binary(b)).await;
            }
            Message::Pong(p) => {
                let _ = tx.send(Seen::Frame(
                    "pong",
                    String::from_utf8_lossy(&p).into_owned(),
                ));
            }
            Message::Ping(p) => {
                let _ = tx.send(Seen::Frame(
                    "ping",
                    String::from_utf8_lossy(&p).into_owned(),
                ));
            }
            Message::Frame(_) => {}
        }
    }
    let _ = tx.send(Seen::Closed(None));
}
