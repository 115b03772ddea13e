//! The fuzz targets' bodies, one function each, shared by `fuzz_targets/*.rs` (libFuzzer on
//! nightly) and the corpus replay test on stable
//! (`crates/wsgate-server/tests/fuzz_corpora.rs`), so a crash once found fails CI for good.
//! Each feeds arbitrary bytes to a parser a client or an operator reaches; the property is
//! the absence of panics (and of hangs: libFuzzer's timeout).
#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use axum::http::Request;
use wsgate::{SourceKind, Sources, TrustedProxies};

/// Polls a future that needs no I/O (local-key JWT checks) to completion.
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// A request head: the first line is the URI, each further line `name: value`. Every
/// source, the origin checks and `X-Forwarded-For` behind a trusted proxy read it.
pub fn sources(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut req = Request::builder().uri(lines.next().unwrap_or("/"));
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            req = req.header(k.trim(), v.trim());
        }
    }
    let Ok(req) = req.body(()) else { return };
    let (parts, _) = req.into_parts();
    static SOURCES: OnceLock<Sources> = OnceLock::new();
    let sources = SOURCES
        .get_or_init(|| Sources::new(SourceKind::ALL).allowed_origins(["https://app.example"]));
    let _ = sources.check_origin(&parts.headers);
    let _ = sources.find(&parts);
    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    let trusted = TRUSTED.get_or_init(|| {
        TrustedProxies::new(["10.0.0.0/8", "::1", "fd00::/8"].map(|n| n.parse().expect("net")))
    });
    let _ = trusted.client(([10, 1, 2, 3], 4000).into(), &parts.headers);
    let _ = text.parse::<wsgate::IpNet>();
}

const SECRET: &[u8] = b"fuzz-secret-that-is-long-enough-for-hs256";

/// A token as sent, and the same bytes signed as a JWT payload, so the claim policy (times,
/// `sub`, `crit`, audiences) is reached past the signature check.
pub fn jwt(data: &[u8]) {
    static VERIFIER: OnceLock<wsgate::verify::JwtVerifier> = OnceLock::new();
    let v = VERIFIER.get_or_init(|| {
        wsgate::install_crypto();
        let cfg = wsgate::verify::JwtConfig {
            audience: vec!["wsgate".into()],
            ..Default::default()
        };
        wsgate::verify::JwtVerifier::new(cfg)
            .and_then(|v| v.with_secret(SECRET))
            .expect("verifier")
    });
    let text = String::from_utf8_lossy(data);
    let _ = ready(v.verify_token(&text));
    // The bytes as claims (and, split at the first NUL, a header of our own choosing).
    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"{\"alg\":\"HS256\"}"[..], data),
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    if let Ok(sig) = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    ) {
        let _ = ready(v.verify_token(&format!("{signing_input}.{sig}")));
    }
}

/// A config file: TOML parsing, the error's key and line, every value check.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let origin = wsgate_server::config::Origin::File("fuzz.toml".into());
    if let Err(e) = wsgate_server::config::Config::parse(&text, &origin) {
        let _ = e.to_string();
    }
}

/// A client frame (`wsgate::protocol::ClientFrame`): parsing, channel rules, permission
/// patterns, and the answer frames built from what was parsed.
pub fn pubsub_frames(data: &[u8]) {
    use wsgate::protocol::{ClientFrame, ServerFrame, SessionFrame, is_refresh};
    let text = String::from_utf8_lossy(data);
    let (id, frame) = ClientFrame::parse(&text);
    // What the session reads as a credential, the proxy's cheap reader sees as one too: a
    // proxy never forwards a frame that carries a token (escaped, repeated keys and all).
    if let Ok(ClientFrame::Auth { .. } | ClientFrame::Refresh { .. }) = &frame {
        let seen = SessionFrame::of(&text);
        assert!(
            seen.is_some_and(SessionFrame::carries_credential),
            "a credential frame the proxy would forward: {text:?} ({seen:?})"
        );
    }
    if let Ok(ClientFrame::Refresh { .. }) = &frame {
        assert!(
            is_refresh(&text),
            "a refresh the session would not take: {text:?}"
        );
    }
    if let Err(e) = &frame {
        let answer = ServerFrame::Error {
            code: e.code,
            message: e.message,
            channel: e.channel.as_deref(),
            id: id.as_ref(),
        };
        assert!(!answer.to_text().is_empty());
    }
    let patterns = ["chat:*".to_owned(), "user:{sub}".to_owned(), "*".to_owned()];
    if let Ok(
        ClientFrame::Subscribe { channel: c }
        | ClientFrame::Unsubscribe { channel: c }
        | ClientFrame::Publish { channel: c, .. },
    ) = frame
    {
        for p in &patterns {
            let _ = wsgate::permissions::allowed(std::slice::from_ref(p), "al{sub}ice", &c);
        }
    }
}

/// The proxy's upstream answer to a handshake, in two reads (split at the first byte's value):
/// the head parser, the `101`/accept-key checks, the 16 KiB cap.
pub fn upstream_answer(data: &[u8]) {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let _ = wsgate::relay::read_answer(&data[..split], KEY);
    if let Ok(Some((_, start))) = wsgate::relay::read_answer(data, KEY) {
        assert!(
            start <= data.len(),
            "the frame start lies inside what was read"
        );
    }
}

/// What an identity provider sends back: an RFC 7662 introspection answer and an OpenID
/// discovery document, read through a claim mapping whose paths come from the input too
/// (the first line: `subject channels publish`, dotted names), then a requirement checked
/// against the claims. A provider's answer is as hostile as a client's frame.
pub fn provider_answers(data: &[u8]) {
    use wsgate::verify::{ClaimMap, ClaimPath, Requirements};
    let text = String::from_utf8_lossy(data);
    let (first, body) = text.split_once('\n').unwrap_or(("", &text));
    let mut names = first.split(' ').filter_map(|n| ClaimPath::new(n).ok());
    let mut map = ClaimMap::default();
    if let Some(p) = names.next() {
        map.subject = p;
    }
    if let Some(p) = names.next() {
        map.channels = p;
    }
    if let Some(p) = names.next() {
        map.publish = p.clone();
        let req = Requirements::new().with(p, ["x".to_owned()]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
            let _ = req.allow(&v);
        }
    }
    if let Ok(Some(v)) = wsgate::verify::introspection::parse_answer(body.as_bytes(), &map) {
        assert!(!v.sub.is_empty(), "an identity without a subject");
    }
    let _ = wsgate::verify::discovery::parse_document(body.as_bytes());
}

/// A Security Event Token's payload as a transmitter sends it (after its signature checked):
/// `jti`, `iat`, `events` and every subject format, nested as deep and as large as the input
/// makes them. What a verified SET says is as hostile as what a client sends, for a key the
/// transmitter lost.
pub fn set_payload(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(set) = wsgate::verify::set::parse_events(&v)
    {
        assert!(!set.jti.is_empty() && set.jti.len() <= 256);
        assert!(!set.events.is_empty() && set.events.len() <= 16);
        for e in &set.events {
            let _ = e.acted_on();
        }
    }
}

/// What a proxy's peers send after the `101`: the first byte says whose frames the rest is
/// (its low bit: the upstream's, unmasked, or a client's, masked) and where to cut it in two
/// reads. Whatever the bytes, the reader takes the same messages (and stops at the same
/// refusal) however they arrive, and no message passes the bound.
pub fn upstream_frames(data: &[u8]) {
    use wsgate::relay::Peer;
    const MAX: usize = 4096;
    let Some((first, bytes)) = data.split_first() else {
        return;
    };
    let peer = if first & 1 == 0 {
        Peer::Server
    } else {
        Peer::Client
    };
    let whole = wsgate::relay::read_frames(peer, &[bytes], MAX);
    let (a, b) = bytes.split_at(usize::from(*first >> 1).min(bytes.len()));
    assert_eq!(
        wsgate::relay::read_frames(peer, &[a, b], MAX),
        whole,
        "the same frames in two reads"
    );
    use axum::extract::ws::Message;
    for message in &whole.0 {
        let len = match message {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(f) => f.as_ref().map_or(0, |f| 2 + f.reason.len()),
        };
        assert!(len <= MAX, "a message past the bound");
    }
}
