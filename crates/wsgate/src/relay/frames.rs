//! A peer's frames, taken from its bytes as they arrive: an upstream's (frames come
//! unmasked: wsgate is its client) or a proxied client's (frames come masked and are
//! unmasked here: wsgate is its server). No I/O here: [`FrameSocket`](super::FrameSocket)
//! fills the buffer from its connection, and the fuzz target ([`read_frames`]) from
//! arbitrary bytes, through the same code.
//!
//! What the peer may not send is refused with its reason: frames masked (from a server) or
//! unmasked (from a client), reserved bits, unknown opcodes, fragmented or long control
//! frames, bad close codes, fragments out of place, text that is not UTF-8 (found as soon as
//! a fragment proves it, not at the message's end; a message in one frame is checked where
//! its text is taken, see [`DataFrame`]); and a message past the bound is refused on its
//! header (or its fragments added up) before its bytes are waited for.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::{Buf, Bytes, BytesMut};

/// Whose frames are read: RFC 6455 §5.1 has a client mask every frame and a server none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// An upstream server: its frames come unmasked, ours go masked.
    Server,
    /// A client: its frames come masked, ours go unmasked.
    Client,
}

/// Why a peer's frames cannot be read on (the connection then closes with
/// [`PeerError::close_reason`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// A message past the bound.
    #[error("a message larger than the relay takes")]
    TooBig,
    /// A frame this peer may not send.
    #[error("the {0} broke the WebSocket protocol: {1}")]
    Protocol(&'static str, &'static str),
    /// Text (or a close reason) that is not UTF-8.
    #[error("the {0} sent text that is not UTF-8")]
    Utf8(&'static str),
    /// The connection failed.
    #[error("the {0}'s connection failed: {1}")]
    Io(&'static str, std::io::Error),
}

impl PeerError {
    /// The close the peer is told of; `None` when its connection is gone (nothing to tell).
    pub(crate) fn close_reason(&self) -> Option<crate::protocol::CloseReason> {
        use crate::protocol::CloseReason;
        match self {
            PeerError::TooBig => Some(CloseReason::TooBig),
            PeerError::Protocol(..) => Some(CloseReason::ProtocolError),
            PeerError::Utf8(_) => Some(CloseReason::InvalidUtf8),
            PeerError::Io(..) => None,
        }
    }
}

impl Peer {
    /// The peer's name in an error.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Server => "upstream",
            Peer::Client => "client",
        }
    }
}

/// The reading half's state: bytes read and not yet taken, and a message being put together.
pub(crate) struct FrameReader {
    /// Whose frames these are: masked (a client's) or not (a server's).
    peer: Peer,
    /// Largest message (and so frame) taken.
    max_message: usize,
    /// Bytes read and not yet taken; no allocation while idle.
    pub(crate) read: BytesMut,
    /// A fragmented data message being put together.
    partial: Option<Partial>,
}

/// A fragmented data message being put together.
struct Partial {
    text: bool,
    so_far: BytesMut,
    /// For text: how many of its bytes are known to be UTF-8 (a character may be cut
    /// between fragments, so the end of one is checked again with the next).
    checked: usize,
}

/// One step of reading.
pub(crate) enum Parsed {
    /// A whole data message that came as one frame, kept as its bytes.
    Data(DataFrame),
    /// A whole message put together from fragments, or a control frame.
    Message(Message),
    /// A fragment was taken; the message goes on.
    Fragment,
    /// At least this many more bytes are needed.
    Need(usize),
}

impl FrameReader {
    /// A reader of `peer`'s frames starting with `read`, the bytes that came with the
    /// handshake.
    pub(crate) fn new(peer: Peer, read: &[u8], max_message: usize) -> Self {
        Self {
            peer,
            max_message,
            read: BytesMut::from(read),
            partial: None,
        }
    }

    fn broke(&self, why: &'static str) -> PeerError {
        PeerError::Protocol(self.peer.name(), why)
    }

    /// Takes one frame from what was read, if it is all there.
    pub(crate) fn parse(&mut self) -> Result<Parsed, PeerError> {
        let have = self.read.len();
        if have < 2 {
            return Ok(Parsed::Need(2 - have));
        }
        let (b0, b1) = (self.read[0], self.read[1]);
        if b0 & 0x70 != 0 {
            return Err(self.broke("reserved bits set"));
        }
        let masked = b1 & 0x80 != 0;
        match (self.peer, masked) {
            (Peer::Server, true) => return Err(self.broke("a masked frame from the server")),
            (Peer::Client, false) => return Err(self.broke("an unmasked frame from the client")),
            _ => {}
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (len, length_end) = match b1 & 0x7f {
            126 if have < 4 => return Ok(Parsed::Need(4 - have)),
            126 => (
                u64::from(u16::from_be_bytes([self.read[2], self.read[3]])),
                4,
            ),
            127 if have < 10 => return Ok(Parsed::Need(10 - have)),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.read[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x08 != 0;
        if control && (!fin || len > 125) {
            return Err(self.broke("a fragmented or long control frame"));
        }
        let so_far = self.partial.as_ref().map_or(0, |p| p.so_far.len());
        let room = self
            .max_message
            .saturating_sub(if control { 0 } else { so_far });
        let len = match usize::try_from(len) {
            Ok(len) if len <= room => len,
            _ => return Err(PeerError::TooBig),
        };
        let header = if masked { length_end + 4 } else { length_end };
        if have < header + len {
            return Ok(Parsed::Need(header + len - have));
        }
        let mask = masked.then(|| {
            let mut key = [0u8; 4];
            key.copy_from_slice(&self.read[length_end..header]);
            key
        });
        if fin && matches!(opcode, 0x1 | 0x2) && self.partial.is_none() {
            // The common case: kept as the bytes it came in (the whole buffer when it is
            // all this frame, with no new allocation), so a relay can send them on.
            let mut bytes = if self.read.len() == header + len {
                std::mem::take(&mut self.read)
            } else {
                self.read.split_to(header + len)
            };
            if let Some(key) = mask {
                apply_mask(&mut bytes[header..], key);
            }
            return Ok(Parsed::Data(DataFrame {
                peer: self.peer,
                bytes,
                payload_at: header,
                minimal: length_end == length_end_for(len),
            }));
        }
        self.read.advance(header);
        let mut payload = self.read.split_to(len);
        if let Some(key) = mask {
            apply_mask(&mut payload, key);
        }
        self.take(fin, opcode, payload)
    }

    /// What a whole frame means.
    fn take(&mut self, fin: bool, opcode: u8, payload: BytesMut) -> Result<Parsed, PeerError> {
        let message = match opcode {
            0x0 => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(self.broke("a fragment out of place"));
                };
                partial.so_far.extend_from_slice(&payload);
                if !fin {
                    if partial.text {
                        partial.check_utf8(self.peer)?;
                    }
                    return Ok(Parsed::Fragment);
                }
                match self.partial.take() {
                    Some(whole) => data(whole.text, whole.so_far.freeze(), self.peer)?,
                    None => return Err(self.broke("a fragment out of place")),
                }
            }
            0x1 | 0x2 if self.partial.is_some() => {
                return Err(self.broke("a fragment out of place"));
            }
            0x1 | 0x2 if !fin => {
                let mut partial = Partial {
                    text: opcode == 0x1,
                    so_far: payload,
                    checked: 0,
                };
                if partial.text {
                    partial.check_utf8(self.peer)?;
                }
                self.partial = Some(partial);
                return Ok(Parsed::Fragment);
            }
            0x1 | 0x2 => data(opcode == 0x1, payload.freeze(), self.peer)?,
            0x8 => Message::Close(close_frame(&payload, self.peer)?),
            0x9 => Message::Ping(payload.freeze()),
            0xA => Message::Pong(payload.freeze()),
            _ => return Err(self.broke("an unknown opcode")),
        };
        Ok(Parsed::Message(message))
    }
}

/// Where a frame's length field ends when it is as short as RFC 6455 §5.2 has it.
fn length_end_for(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// A whole data message that came as one frame (nearly every message), held as the bytes it
/// came in with its payload unmasked in place. A relay sends these bytes on as they are
/// ([`FrameSocket::send_relayed`](super::FrameSocket)), with no copy, when the other side
/// takes the same header (re-masked with a key of wsgate's, never the sender's).
///
/// Its text is checked for UTF-8 by whoever takes it ([`DataFrame::text`],
/// [`DataFrame::into_message`]), once: the check is where the `&str` is wanted.
#[derive(Debug)]
pub(crate) struct DataFrame {
    /// Who sent it (for an error's wording).
    peer: Peer,
    /// The frame: its header (with the sender's mask key, if masked), then its payload.
    pub(crate) bytes: BytesMut,
    /// Where the payload starts.
    pub(crate) payload_at: usize,
    /// Whether its length was written in the fewest bytes (only then is the header sent on).
    pub(crate) minimal: bool,
}

impl DataFrame {
    pub(crate) fn is_text(&self) -> bool {
        self.bytes[0] & 0x0f == 0x1
    }

    /// Whether the header carries a mask key (the sender was a client).
    pub(crate) fn is_masked(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_at..]
    }

    /// The payload as text: `None` for binary; refused when it is not UTF-8.
    pub(crate) fn text(&self) -> Result<Option<&str>, PeerError> {
        if !self.is_text() {
            return Ok(None);
        }
        std::str::from_utf8(self.payload())
            .map(Some)
            .map_err(|_| PeerError::Utf8(self.peer.name()))
    }

    /// The message it holds.
    pub(crate) fn into_message(mut self) -> Result<Message, PeerError> {
        let (text, peer) = (self.is_text(), self.peer);
        self.bytes.advance(self.payload_at);
        data(text, self.bytes.freeze(), peer)
    }
}

impl Partial {
    /// Refuses text that cannot become UTF-8 whatever follows. Not called at the last
    /// fragment: the whole message is checked as it becomes one ([`data`]).
    fn check_utf8(&mut self, peer: Peer) -> Result<(), PeerError> {
        match std::str::from_utf8(&self.so_far[self.checked..]) {
            Ok(_) => self.checked = self.so_far.len(),
            // Cut inside a character: its first bytes are checked again with the next part.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(PeerError::Utf8(peer.name())),
        }
        Ok(())
    }
}

/// A whole data message.
fn data(text: bool, payload: Bytes, peer: Peer) -> Result<Message, PeerError> {
    if !text {
        return Ok(Message::Binary(payload));
    }
    Utf8Bytes::try_from(payload)
        .map(Message::Text)
        .map_err(|_| PeerError::Utf8(peer.name()))
}

/// A close frame's code and reason (none when empty); codes a peer may not send refused.
fn close_frame(payload: &[u8], peer: Peer) -> Result<Option<CloseFrame>, PeerError> {
    match payload {
        [] => Ok(None),
        [_] => Err(PeerError::Protocol(peer.name(), "a bad close frame")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !crate::protocol::may_send(code) {
                return Err(PeerError::Protocol(peer.name(), "a bad close code"));
            }
            let reason = Utf8Bytes::try_from(Bytes::copy_from_slice(reason))
                .map_err(|_| PeerError::Utf8(peer.name()))?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// XORs `buf` with the repeated `mask` (eight bytes at a time where it can): masking and
/// unmasking are the same operation.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The chunks covered a multiple of 8 bytes, so the mask starts over here.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Every message and control frame `peer`'s bytes hold, read as they would arrive in
/// `chunks`, until the bytes run out or a frame is refused (then its reason). For the fuzz
/// target: the socket reads through the same [`FrameReader`].
#[doc(hidden)]
pub fn read_frames(
    peer: Peer,
    chunks: &[&[u8]],
    max_message: usize,
) -> (Vec<Message>, Option<String>) {
    let mut reader = FrameReader::new(peer, &[], max_message);
    let mut messages = Vec::new();
    for chunk in chunks {
        reader.read.extend_from_slice(chunk);
        loop {
            match reader.parse() {
                Ok(Parsed::Message(m)) => messages.push(m),
                Ok(Parsed::Data(d)) => match d.into_message() {
                    Ok(m) => messages.push(m),
                    Err(e) => return (messages, Some(e.to_string())),
                },
                Ok(Parsed::Fragment) => {}
                Ok(Parsed::Need(_)) => break,
                Err(e) => return (messages, Some(e.to_string())),
            }
        }
    }
    (messages, None)
}

/// A masked frame as a client sends it (`key` its mask).
#[cfg(test)]
pub(crate) fn masked(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let plain = frame(b0, payload);
    let header = plain.len() - payload.len();
    let mut f = plain[..header].to_vec();
    f[1] |= 0x80;
    f.extend_from_slice(&key);
    let at = f.len();
    f.extend_from_slice(payload);
    apply_mask(&mut f[at..], key);
    f
}

/// An unmasked frame as a server sends it: first byte `b0`, then the length and payload.
#[cfg(test)]
pub(crate) fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_the_same_however_the_bytes_arrive() {
        let bytes = [
            frame(0x81, b"first"),
            frame(0x02, &[1; 200]),
            frame(0x89, b"ping"),
            frame(0x80, &[2; 70_000]),
            frame(0x01, "wö".as_bytes()),
            frame(0x00, b"r"),
            frame(0x80, b"ld"),
            frame(0x8A, b""),
            frame(0x88, &[0x03, 0xe8, b'o', b'k']),
        ]
        .concat();
        let (whole, error) = read_frames(Peer::Server, &[&bytes], 1 << 20);
        assert_eq!(error, None);
        let mut joined = vec![1u8; 200];
        joined.extend_from_slice(&[2; 70_000]);
        assert_eq!(
            whole,
            vec![
                Message::Text("first".into()),
                Message::Ping("ping".into()),
                Message::Binary(joined.into()),
                Message::Text("wörld".into()),
                Message::Pong(Bytes::new()),
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "ok".into()
                })),
            ]
        );
        // A byte at a time, and cut in three anywhere: the same messages.
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            read_frames(Peer::Server, &bytewise, 1 << 20),
            (whole.clone(), None)
        );
        for cut in [1, 2, 3, 4, 9, 10, 11, 250, 70_000, bytes.len() - 1] {
            let (a, rest) = bytes.split_at(cut);
            let (b, c) = rest.split_at(rest.len() / 2);
            assert_eq!(
                read_frames(Peer::Server, &[a, b, c], 1 << 20),
                (whole.clone(), None),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_refusal_ends_the_reading_with_its_reason() {
        let bytes = [frame(0x81, b"ok"), frame(0x83, b"x"), frame(0x81, b"never")].concat();
        let (messages, error) = read_frames(Peer::Server, &[&bytes], 1024);
        assert_eq!(messages, vec![Message::Text("ok".into())]);
        assert_eq!(
            error.as_deref(),
            Some("the upstream broke the WebSocket protocol: an unknown opcode")
        );
        let (_, error) = read_frames(
            Peer::Server,
            &[&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]],
            1024,
        );
        assert_eq!(
            error.as_deref(),
            Some("a message larger than the relay takes")
        );
    }

    #[test]
    fn a_clients_frames_are_unmasked_however_the_bytes_arrive() {
        let key = [0xa1, 0x02, 0xf3, 0x44];
        let bytes = [
            masked(0x81, "héllo".as_bytes(), key),
            masked(0x02, &[9; 300], [1, 2, 3, 4]),
            masked(0x89, b"are you there", key),
            masked(0x80, &[8; 70_000], [0, 0, 0, 0]),
            masked(0x88, &[0x0f, 0xa1, b'b'], key),
        ]
        .concat();
        let mut joined = vec![9u8; 300];
        joined.extend_from_slice(&[8; 70_000]);
        let expected = vec![
            Message::Text("héllo".into()),
            Message::Ping("are you there".into()),
            Message::Binary(joined.into()),
            Message::Close(Some(CloseFrame {
                code: 4001,
                reason: "b".into(),
            })),
        ];
        assert_eq!(
            read_frames(Peer::Client, &[&bytes], 1 << 20),
            (expected.clone(), None)
        );
        for cut in [1, 2, 3, 5, 6, 7, 12, 15, 16, 400, bytes.len() - 1] {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                read_frames(Peer::Client, &[a, b], 1 << 20),
                (expected.clone(), None),
                "{cut}"
            );
        }
    }

    #[test]
    fn each_side_refuses_the_others_masking() {
        let (_, error) = read_frames(Peer::Client, &[&frame(0x81, b"x")], 1024);
        assert_eq!(
            error.as_deref(),
            Some("the client broke the WebSocket protocol: an unmasked frame from the client")
        );
        let (_, error) = read_frames(Peer::Server, &[&masked(0x81, b"x", [1; 4])], 1024);
        assert_eq!(
            error.as_deref(),
            Some("the upstream broke the WebSocket protocol: a masked frame from the server")
        );
    }

    #[test]
    fn text_that_cannot_become_utf8_is_refused_at_its_first_fragment() {
        // "é" cut between two fragments is fine; a byte no UTF-8 holds is refused at once,
        // before the message's last fragment (which never comes here).
        let key = [7, 7, 7, 7];
        let cut = [masked(0x01, &[b'a', 0xc3], key), masked(0x80, &[0xa9], key)].concat();
        assert_eq!(
            read_frames(Peer::Client, &[&cut], 1024),
            (vec![Message::Text("aé".into())], None)
        );
        for bad in [
            masked(0x01, &[b'a', 0xff], key),
            [masked(0x01, b"ok", key), masked(0x00, &[0xc0, 0x80], key)].concat(),
        ] {
            let (messages, error) = read_frames(Peer::Client, &[&bad], 1024);
            assert!(messages.is_empty());
            assert_eq!(
                error.as_deref(),
                Some("the client sent text that is not UTF-8")
            );
        }
        // A character still cut when the message ends is not UTF-8 either.
        let unfinished = [masked(0x01, b"a", key), masked(0x80, &[0xc3], key)].concat();
        let (_, error) = read_frames(Peer::Client, &[&unfinished], 1024);
        assert_eq!(
            error.as_deref(),
            Some("the client sent text that is not UTF-8")
        );
    }
}
