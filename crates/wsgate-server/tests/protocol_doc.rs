//! `docs/protocol.md` is the wire protocol for client authors; this keeps its tables true to
//! `wsgate::protocol`: every error code and no other, every close code wsgate sends with its
//! reason, every frame type both ways. The matches below are exhaustive on purpose: a new
//! variant does not compile until it is placed here — and then in the document.

use std::collections::BTreeSet;

use serde_json::Value;
use wsgate::protocol::{ClientFrame, CloseReason, ErrorCode, ServerFrame};

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .expect("docs/protocol.md")
}

/// The rows of the table under the heading that starts with `heading`: their cells.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"));
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1) // the header
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn every_error_code_and_no_other() {
    let documented: BTreeSet<String> = table(&doc(), "4. Error codes")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let real: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(documented, real);
}

/// Every reason wsgate closes with (`CloseReason::ALL`). The match is exhaustive: a new reason
/// stops this file compiling — add it to the match and to `CloseReason::ALL`, which the
/// document check then reads.
fn reasons() -> Vec<CloseReason> {
    for &r in CloseReason::ALL {
        match r {
            CloseReason::Shutdown
            | CloseReason::IdleTimeout
            | CloseReason::ClientGone
            | CloseReason::ProtocolError
            | CloseReason::InvalidUtf8
            | CloseReason::Refused(_)
            | CloseReason::SlowConsumer
            | CloseReason::TooBig
            | CloseReason::TryAgainLater
            | CloseReason::Gateway(_)
            | CloseReason::UpstreamGone
            | CloseReason::TokenExpired
            | CloseReason::Revoked
            | CloseReason::Disconnected
            | CloseReason::KeyRevoked
            | CloseReason::RateLimited => {}
        }
    }
    CloseReason::ALL.to_vec()
}

#[test]
fn every_close_code_with_its_reason() {
    let rows = table(&doc(), "5. Close codes");
    let documented: BTreeSet<u16> = rows.iter().filter_map(|r| r[0].parse().ok()).collect();
    let mut sent: BTreeSet<u16> = reasons().iter().map(|r| r.code()).collect();
    sent.insert(1000); // a normal close, by either side
    assert_eq!(documented, sent);
    for r in reasons() {
        let row = rows
            .iter()
            .find(|row| row[0] == r.code().to_string())
            .expect("a row per code");
        assert!(
            row[1].contains(r.reason()),
            "{}: reason `{}` not in the row {row:?}",
            r.code(),
            r.reason()
        );
    }
}

#[test]
fn every_frame_type_both_ways() {
    let doc = doc();
    let client: BTreeSet<String> = table(&doc, "2. Frames a client sends")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let client_types: BTreeSet<String> = [
        r#"{"type":"auth","token":"t"}"#,
        r#"{"type":"refresh","token":"t"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"subscribe","channel":"c"}"#,
        r#"{"type":"unsubscribe","channel":"c"}"#,
        r#"{"type":"publish","channel":"c","data":1}"#,
    ]
    .iter()
    .map(|text| {
        let frame = ClientFrame::parse(text).1.expect("a frame");
        // Exhaustive: a new client frame must be added above (and documented).
        let name = match frame {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Ping => "ping",
            ClientFrame::Subscribe { .. } => "subscribe",
            ClientFrame::Unsubscribe { .. } => "unsubscribe",
            ClientFrame::Publish { .. } => "publish",
        };
        name.to_owned()
    })
    .collect();
    assert_eq!(client, client_types);

    let server: BTreeSet<String> = table(&doc, "3. Frames the server sends")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let data = Value::Null;
    let frames = [
        ServerFrame::Welcome {
            sub: "s",
            session: "x",
            expires_at: None,
        },
        ServerFrame::Expiring { expires_at: 1 },
        ServerFrame::Refreshed {
            id: None,
            expires_at: None,
        },
        ServerFrame::Message {
            channel: "c",
            from: None,
            data: &data,
        },
        ServerFrame::Subscribed {
            channel: "c",
            id: None,
        },
        ServerFrame::Unsubscribed {
            channel: "c",
            reason: None,
            id: None,
        },
        ServerFrame::Published {
            channel: "c",
            id: None,
        },
        ServerFrame::Pong { id: None },
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            message: "m",
            channel: None,
            id: None,
        },
    ];
    let server_types: BTreeSet<String> = frames
        .iter()
        .map(|f| {
            // Exhaustive: a new server frame must be added above (and documented).
            match f {
                ServerFrame::Welcome { .. }
                | ServerFrame::Expiring { .. }
                | ServerFrame::Refreshed { .. }
                | ServerFrame::Message { .. }
                | ServerFrame::Subscribed { .. }
                | ServerFrame::Unsubscribed { .. }
                | ServerFrame::Published { .. }
                | ServerFrame::Pong { .. }
                | ServerFrame::Error { .. } => {}
            }
            let v: Value = serde_json::from_str(&f.to_text()).unwrap();
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(server, server_types);
}
