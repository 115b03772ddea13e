//! The JSON text frames on a socket (docs/protocol.md §2–§3): what a client sends
//! ([`ClientFrame`], one typed dispatch, as mini-redis's `Command::from_frame`) and what
//! the server sends ([`ServerFrame`], one serde-tagged enum).
//!
//! A request's `id` (any JSON value) is echoed in its answer; it travels beside the frame,
//! not in it, so every answer variant can carry it without each request repeating it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ErrorCode;
use crate::permissions::valid_channel;

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `{"type":"auth","token"}`: the first frame of the `message` source.
    Auth {
        /// The credential.
        token: String,
    },
    /// `{"type":"refresh","token"}`: a new credential for the same subject (taken by the
    /// session guard, never seen by an endpoint).
    Refresh {
        /// The new credential (empty when absent: then refused like any bad credential).
        token: String,
    },
    /// `{"type":"ping"}`: answered with `pong`.
    Ping,
    /// `{"type":"subscribe","channel"}`.
    Subscribe {
        /// A valid channel name.
        channel: String,
    },
    /// `{"type":"unsubscribe","channel"}`.
    Unsubscribe {
        /// A valid channel name.
        channel: String,
    },
    /// `{"type":"publish","channel","data"}`; a missing `data` is refused after the
    /// permission check, so a client learns first whether it may publish at all.
    Publish {
        /// A valid channel name.
        channel: String,
        /// Any JSON value.
        data: Option<Value>,
    },
}

/// Why a client frame is answered with an `error` frame: the code, a fixed message, the
/// channel it named.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The stable code.
    pub code: ErrorCode,
    /// A fixed sentence.
    pub message: &'static str,
    /// The channel the frame named, when it named one.
    pub channel: Option<String>,
}

impl FrameError {
    /// An error about no channel in particular.
    pub fn new(code: ErrorCode, message: &'static str) -> Self {
        Self {
            code,
            message,
            channel: None,
        }
    }
}

/// Every field any client frame has; which ones matter depends on `type`.
#[derive(Deserialize)]
struct Fields {
    r#type: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    token: Option<Value>,
}

impl ClientFrame {
    /// Reads one text frame: its `id` (echoed in the answer, whatever happens) and the frame,
    /// or why it is refused. Pure, so the fuzzers drive it directly.
    pub fn parse(text: &str) -> (Option<Value>, Result<ClientFrame, FrameError>) {
        // An object, not serde's other form of a struct (a JSON array of its fields).
        let object = text.trim_start().starts_with('{');
        let Some(f) = object
            .then(|| serde_json::from_str::<Fields>(text).ok())
            .flatten()
        else {
            let why = "frames are JSON objects with a \"type\"";
            return (None, Err(FrameError::new(ErrorCode::BadJson, why)));
        };
        let Some(kind) = f.r#type else {
            let why = "\"type\" is required";
            return (f.id, Err(FrameError::new(ErrorCode::MissingField, why)));
        };
        let channel = || match f.channel {
            None => Err(FrameError::new(
                ErrorCode::MissingField,
                "\"channel\" is required",
            )),
            Some(channel) if !valid_channel(&channel) => Err(FrameError {
                code: ErrorCode::InvalidChannel,
                message: "channel names are 1-200 printable characters without spaces",
                channel: Some(channel),
            }),
            Some(channel) => Ok(channel),
        };
        // A credential is a string; anything else is refused here, with the request's `id`.
        let token = || match f.token {
            Some(Value::String(token)) => Ok(token),
            _ => Err(FrameError::new(
                ErrorCode::MissingField,
                "\"token\" (a string) is required",
            )),
        };
        let frame = match kind.as_str() {
            "ping" => Ok(ClientFrame::Ping),
            "auth" => token().map(|token| ClientFrame::Auth { token }),
            "refresh" => token().map(|token| ClientFrame::Refresh { token }),
            "subscribe" => channel().map(|channel| ClientFrame::Subscribe { channel }),
            "unsubscribe" => channel().map(|channel| ClientFrame::Unsubscribe { channel }),
            "publish" => channel().map(|channel| ClientFrame::Publish {
                channel,
                data: f.data,
            }),
            _ => Err(FrameError::new(
                ErrorCode::UnknownType,
                "unknown frame type",
            )),
        };
        (f.id, frame)
    }
}

/// What a client text frame is to the session guard, read without building the frame: a
/// `refresh` (taken by the guard on every endpoint that speaks session frames), and whether it
/// carries a credential (an `auth` or `refresh` with a string `token`) — which a proxy never
/// forwards to its upstream.
///
/// The JSON is really parsed (an escaped `"\u0072efresh"` is a refresh), but only for
/// frames that could be one: ordinary traffic is passed over by a byte scan. Where a key
/// repeats, any occurrence counts: a frame is never let through on the strength of one
/// duplicate that a lenient reader further on would ignore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionFrame {
    /// `"type":"refresh"`.
    pub refresh: bool,
    /// `"type":"auth"`.
    pub auth: bool,
    /// A string `"token"`.
    pub token: bool,
}

impl SessionFrame {
    /// Reads `text`; `None` for anything that is not a JSON object naming `auth` or
    /// `refresh` as its type.
    pub fn of(text: &str) -> Option<Self> {
        let t = text.trim_start();
        let could_be =
            t.starts_with('{') && (t.contains("refresh") || t.contains("auth") || t.contains('\\'));
        if !could_be {
            return None;
        }
        let peek = serde_json::from_str::<SessionFrame>(t).ok()?;
        (peek.refresh || peek.auth).then_some(peek)
    }

    /// An `auth` or `refresh` frame with a string token: a credential in flight.
    pub fn carries_credential(self) -> bool {
        self.token && (self.auth || self.refresh)
    }
}

impl<'de> Deserialize<'de> for SessionFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};

        /// A value that may be a string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum MaybeString {
            String(String),
            Other(IgnoredAny),
        }

        struct Peek;
        impl<'de> Visitor<'de> for Peek {
            type Value = SessionFrame;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionFrame, A::Error> {
                let mut seen = SessionFrame::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => match map.next_value::<MaybeString>()? {
                            MaybeString::String(t) if t == "refresh" => seen.refresh = true,
                            MaybeString::String(t) if t == "auth" => seen.auth = true,
                            _ => {}
                        },
                        "token" => {
                            let v = map.next_value::<MaybeString>()?;
                            seen.token |= matches!(v, MaybeString::String(_));
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(seen)
            }
        }
        d.deserialize_map(Peek)
    }
}

/// Whether the session guard takes this frame as a `refresh` (echo and pubsub endpoints).
pub fn is_refresh(text: &str) -> bool {
    SessionFrame::of(text).is_some_and(|f| f.refresh)
}

/// A frame the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The first frame of a session.
    Welcome {
        /// The subject.
        sub: &'a str,
        /// This connection's id (128 random bits, hex).
        session: &'a str,
        /// The credential's `exp` (Unix seconds), `null` when it has none.
        expires_at: Option<u64>,
    },
    /// The credential expires soon: refresh before `expires_at`.
    Expiring {
        /// The credential's `exp`.
        expires_at: u64,
    },
    /// A `refresh` was accepted: the new expiry.
    Refreshed {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        /// The new credential's `exp`, `null` when it has none.
        expires_at: Option<u64>,
    },
    /// A publication on a subscribed channel.
    Message {
        /// The channel.
        channel: &'a str,
        /// The publisher's subject; `null` for the admin API.
        from: Option<&'a str>,
        /// What was published.
        data: &'a Value,
    },
    /// Answer to `subscribe`.
    Subscribed {
        /// The channel.
        channel: &'a str,
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// Answer to `unsubscribe`, or sent unasked when a refresh took a channel away.
    Unsubscribed {
        /// The channel.
        channel: &'a str,
        /// `"permission"` when sent unasked.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// Answer to a `publish` that carried an `id`.
    Published {
        /// The channel.
        channel: &'a str,
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// A frame was refused; the connection stays open.
    Error {
        /// The stable code.
        code: ErrorCode,
        /// A fixed sentence.
        message: &'a str,
        /// The channel the refused frame named.
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refresh_detection() {
        assert!(is_refresh(r#"{"type":"refresh","token":"x"}"#));
        assert!(is_refresh(r#" {"token":"x","type":"refresh"}"#));
        assert!(
            is_refresh(r#"{"type":"refresh","id":2}"#),
            "no token: still a refresh, answered with an error"
        );
        assert!(
            is_refresh(r#"{"type":"\u0072efresh","token":"x"}"#),
            "escaped type"
        );
        assert!(!is_refresh(r#"{"type":"publish","data":"refresh"}"#));
        assert!(!is_refresh(r#"refresh"#));
        assert!(!is_refresh(r#"{"type":"refresh""#));
    }

    #[test]
    fn credentials_in_flight_are_recognised() {
        let carries = |t: &str| SessionFrame::of(t).is_some_and(SessionFrame::carries_credential);
        assert!(carries(r#"{"type":"auth","token":"t"}"#));
        assert!(carries(r#"{"type":"refresh","token":"t","id":1}"#));
        assert!(
            carries(r#"{"\u0074ype":"\u0061uth","t\u006fken":"t"}"#),
            "escaped keys"
        );
        assert!(
            carries(r#"{"type":"chat","token":"t","type":"auth"}"#),
            "a repeated type counts"
        );
        assert!(!carries(r#"{"type":"refresh","id":2}"#), "no token");
        assert!(!carries(r#"{"type":"refresh","token":5}"#), "not a string");
        assert!(!carries(r#"{"type":"chat","token":"t"}"#), "another type");
        assert!(!carries(r#"{"type":"auth","token":"t""#), "not JSON");
        assert!(!carries(r#"["auth","token"]"#));
    }

    #[test]
    fn a_refresh_without_a_string_token_keeps_its_id() {
        let (id, f) = ClientFrame::parse(r#"{"type":"refresh","token":7,"id":"r1"}"#);
        assert_eq!(id, Some(json!("r1")));
        assert_eq!(f.unwrap_err().code, ErrorCode::MissingField);
        let (id, f) = ClientFrame::parse(r#"{"type":"refresh","id":2}"#);
        assert_eq!(
            (id, f.unwrap_err().code),
            (Some(json!(2)), ErrorCode::MissingField)
        );
    }

    #[test]
    fn client_frames_parse_with_their_codes() {
        let (id, f) = ClientFrame::parse(r#"{"type":"subscribe","channel":"a","id":7}"#);
        assert_eq!(id, Some(json!(7)));
        assert_eq!(
            f,
            Ok(ClientFrame::Subscribe {
                channel: "a".into()
            })
        );
        assert_eq!(
            ClientFrame::parse("nope").1.unwrap_err().code,
            ErrorCode::BadJson
        );
        let (id, f) = ClientFrame::parse(r#"{"id":"x"}"#);
        assert_eq!(
            (id, f.unwrap_err().code),
            (Some(json!("x")), ErrorCode::MissingField)
        );
        let e = ClientFrame::parse(r#"{"type":"publish","channel":"a b"}"#)
            .1
            .unwrap_err();
        assert_eq!(
            (e.code, e.channel.as_deref()),
            (ErrorCode::InvalidChannel, Some("a b"))
        );
        let e = ClientFrame::parse(r#"{"type":"dance"}"#).1.unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(
            ClientFrame::parse(r#"{"type":"auth","token":"t"}"#).1,
            Ok(ClientFrame::Auth { token: "t".into() })
        );
    }

    #[test]
    fn server_frames_serialize_as_the_spec_says() {
        let id = json!(3);
        let v = |f: ServerFrame| serde_json::from_str::<Value>(&f.to_text()).unwrap();
        assert_eq!(
            v(ServerFrame::Welcome {
                sub: "al",
                session: "s",
                expires_at: None
            }),
            json!({"type":"welcome","sub":"al","session":"s","expires_at":null})
        );
        assert_eq!(
            v(ServerFrame::Refreshed {
                id: Some(&id),
                expires_at: Some(9)
            }),
            json!({"type":"refreshed","id":3,"expires_at":9})
        );
        assert_eq!(v(ServerFrame::Pong { id: None }), json!({"type":"pong"}));
        assert_eq!(
            v(ServerFrame::Error {
                code: ErrorCode::Forbidden,
                message: "no",
                channel: Some("c"),
                id: Some(&id)
            }),
            json!({"type":"error","code":"forbidden","message":"no","channel":"c","id":3})
        );
        assert_eq!(
            v(ServerFrame::Message {
                channel: "c",
                from: None,
                data: &json!([1])
            }),
            json!({"type":"message","channel":"c","from":null,"data":[1]})
        );
    }
}
