//! An upstream's frames, taken from its bytes as they arrive (the client's role in RFC 6455:
//! frames come unmasked). No I/O here: [`UpstreamSocket`](super::UpstreamSocket) fills the
//! buffer from its connection, and the fuzz target ([`read_frames`]) from arbitrary bytes,
//! through the same code.
//!
//! What no server may send is refused with its reason: masked frames, reserved bits, unknown
//! opcodes, fragmented or long control frames, bad close codes or reasons, fragments out of
//! place, text that is not UTF-8; and a message past the bound is refused on its header (or
//! its fragments added up) before its bytes are waited for.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::{Buf, Bytes, BytesMut};

use super::socket::UpstreamError;

/// The reading half's state: bytes read and not yet taken, and a message being put together.
pub(crate) struct FrameReader {
    /// Largest message (and so frame) taken.
    max_message: usize,
    /// Bytes read and not yet taken; no allocation while idle.
    pub(crate) read: BytesMut,
    /// A fragmented data message being put together: whether it is text, its bytes so far.
    partial: Option<(bool, BytesMut)>,
}

/// One step of reading.
pub(crate) enum Parsed {
    /// A whole message (or a control frame).
    Message(Message),
    /// A fragment was taken; the message goes on.
    Fragment,
    /// At least this many more bytes are needed.
    Need(usize),
}

impl FrameReader {
    /// A reader starting with `read`, the bytes that came after the upstream's `101`.
    pub(crate) fn new(read: &[u8], max_message: usize) -> Self {
        Self {
            max_message,
            read: BytesMut::from(read),
            partial: None,
        }
    }

    /// Takes one frame from what was read, if it is all there.
    pub(crate) fn parse(&mut self) -> Result<Parsed, UpstreamError> {
        let have = self.read.len();
        if have < 2 {
            return Ok(Parsed::Need(2 - have));
        }
        let (b0, b1) = (self.read[0], self.read[1]);
        if b0 & 0x70 != 0 {
            return Err(UpstreamError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 != 0 {
            return Err(UpstreamError::Protocol("a masked frame from the server"));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (len, header) = match b1 & 0x7f {
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
            return Err(UpstreamError::Protocol(
                "a fragmented or long control frame",
            ));
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, m)| m.len());
        let room = self
            .max_message
            .saturating_sub(if control { 0 } else { so_far });
        let len = match usize::try_from(len) {
            Ok(len) if len <= room => len,
            _ => return Err(UpstreamError::TooBig),
        };
        if have < header + len {
            return Ok(Parsed::Need(header + len - have));
        }
        self.read.advance(header);
        let payload = self.read.split_to(len);
        self.take(fin, opcode, payload)
    }

    /// What a whole frame means.
    fn take(&mut self, fin: bool, opcode: u8, payload: BytesMut) -> Result<Parsed, UpstreamError> {
        const OUT_OF_PLACE: UpstreamError = UpstreamError::Protocol("a fragment out of place");
        let message = match opcode {
            0x0 => {
                let Some((_, so_far)) = self.partial.as_mut() else {
                    return Err(OUT_OF_PLACE);
                };
                so_far.extend_from_slice(&payload);
                if !fin {
                    return Ok(Parsed::Fragment);
                }
                let Some((text, whole)) = self.partial.take() else {
                    return Err(OUT_OF_PLACE);
                };
                data(text, whole.freeze())?
            }
            0x1 | 0x2 if self.partial.is_some() => return Err(OUT_OF_PLACE),
            0x1 | 0x2 if !fin => {
                self.partial = Some((opcode == 0x1, payload));
                return Ok(Parsed::Fragment);
            }
            0x1 | 0x2 => data(opcode == 0x1, payload.freeze())?,
            0x8 => Message::Close(close_frame(&payload)?),
            0x9 => Message::Ping(payload.freeze()),
            0xA => Message::Pong(payload.freeze()),
            _ => return Err(UpstreamError::Protocol("an unknown opcode")),
        };
        Ok(Parsed::Message(message))
    }
}

/// A whole data message.
fn data(text: bool, payload: Bytes) -> Result<Message, UpstreamError> {
    if !text {
        return Ok(Message::Binary(payload));
    }
    Utf8Bytes::try_from(payload)
        .map(Message::Text)
        .map_err(|_| UpstreamError::Protocol("text that is not UTF-8"))
}

/// A close frame's code and reason (none when empty); codes a peer may not send refused.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, UpstreamError> {
    const BAD: UpstreamError = UpstreamError::Protocol("a bad close frame");
    match payload {
        [] => Ok(None),
        [_] => Err(BAD),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !crate::protocol::may_send(code) {
                return Err(BAD);
            }
            let reason = Utf8Bytes::try_from(Bytes::copy_from_slice(reason)).map_err(|_| BAD)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Every message and control frame an upstream's bytes hold, read as they would arrive in
/// `chunks`, until the bytes run out or a frame is refused (then its reason). For the fuzz
/// target: the socket reads through the same [`FrameReader`].
#[doc(hidden)]
pub fn read_frames(chunks: &[&[u8]], max_message: usize) -> (Vec<Message>, Option<String>) {
    let mut reader = FrameReader::new(&[], max_message);
    let mut messages = Vec::new();
    for chunk in chunks {
        reader.read.extend_from_slice(chunk);
        loop {
            match reader.parse() {
                Ok(Parsed::Message(m)) => messages.push(m),
                Ok(Parsed::Fragment) => {}
                Ok(Parsed::Need(_)) => break,
                Err(e) => return (messages, Some(e.to_string())),
            }
        }
    }
    (messages, None)
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
        let (whole, error) = read_frames(&[&bytes], 1 << 20);
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
        assert_eq!(read_frames(&bytewise, 1 << 20), (whole.clone(), None));
        for cut in [1, 2, 3, 4, 9, 10, 11, 250, 70_000, bytes.len() - 1] {
            let (a, rest) = bytes.split_at(cut);
            let (b, c) = rest.split_at(rest.len() / 2);
            assert_eq!(
                read_frames(&[a, b, c], 1 << 20),
                (whole.clone(), None),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_refusal_ends_the_reading_with_its_reason() {
        let bytes = [frame(0x81, b"ok"), frame(0x83, b"x"), frame(0x81, b"never")].concat();
        let (messages, error) = read_frames(&[&bytes], 1024);
        assert_eq!(messages, vec![Message::Text("ok".into())]);
        assert_eq!(
            error.as_deref(),
            Some("the upstream broke the WebSocket protocol: an unknown opcode")
        );
        let (_, error) = read_frames(&[&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]], 1024);
        assert_eq!(
            error.as_deref(),
            Some("a message larger than the relay takes")
        );
    }
}
