//! The upstream's WebSocket, spoken by wsgate itself (the client's role in RFC 6455).
//!
//! Why not tungstenite, as on the client's side: its reader allocates a read buffer at the
//! upgrade and keeps it for the connection's whole life (2 KiB for every proxied connection,
//! idle or not), and it answers pings and closes inside its reads, so a relay that forwards
//! them too answers twice. Here:
//! - a frame's bytes are held only while it is being read: an idle upstream holds no buffer
//!   (on plain TCP the socket's readiness is awaited before one is allocated), and what was
//!   sent is dropped once written;
//! - nothing is answered on the relay's behalf: an upstream's ping goes to the client, whose
//!   pong comes back; an upstream's close is answered when the relay answers it;
//! - a large frame is read straight into a buffer of its own size, not 2 KiB at a time.
//!
//! The frames themselves are read in `frames.rs` ([`FrameReader`]); this file is the I/O.
//!
//! Cancel safety: the relay selects over [`UpstreamSocket::recv`] and bounds
//! [`UpstreamSocket::send`] by the session's endings, so either may be dropped at any await.
//! What was read, or half written, stays here and the next call carries on from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::UpstreamIo;
use super::frames::{FrameReader, Parsed};

/// How much is read at a time when no frame asks for more.
const READ_CHUNK: usize = 2048;

/// Why the upstream's side cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// A message past the relay's bound ([`super::MAX_UPSTREAM_MESSAGE`]).
    #[error("a message larger than the relay takes")]
    TooBig,
    /// A frame no server may send: masked, with reserved bits, an unknown opcode, a control
    /// frame fragmented or over 125 bytes, a bad close payload, a fragment out of place, or
    /// text that is not UTF-8.
    #[error("the upstream broke the WebSocket protocol: {0}")]
    Protocol(&'static str),
    /// The connection failed.
    #[error("the upstream's connection failed: {0}")]
    Io(io::Error),
}

/// A connected upstream WebSocket: frames in as [`Message`]s, frames out masked.
pub struct UpstreamSocket {
    io: UpstreamIo,
    /// What was read and not yet taken as frames.
    frames: FrameReader,
    /// Frames sent and not yet all written (a send the relay cut short); empty when idle.
    out: Vec<u8>,
    written: usize,
}

impl UpstreamSocket {
    /// The socket over `io`, with `read` the bytes that came after the upstream's `101`.
    pub(crate) fn new(io: UpstreamIo, read: &[u8], max_message: usize) -> Self {
        Self {
            io,
            frames: FrameReader::new(read, max_message),
            out: Vec::new(),
            written: 0,
        }
    }

    /// The next message or control frame; `None` once the connection has ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Message, UpstreamError>> {
        loop {
            match self.frames.parse() {
                Ok(Parsed::Message(m)) => return Some(Ok(m)),
                Ok(Parsed::Fragment) => {}
                Ok(Parsed::Need(n)) => {
                    match std::future::poll_fn(|cx| self.poll_fill(cx, n)).await {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) => return Some(Err(UpstreamError::Io(e))),
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads more bytes, with room for at least `need` more.
    fn poll_fill(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<io::Result<usize>> {
        let read = &mut self.frames.read;
        if read.is_empty() && read.capacity() == 0 {
            // Idle: no buffer until there is something to read.
            ready!(self.io.poll_read_ready(cx))?;
        }
        // `need` is at least 1, and bounded: a frame's length is checked before it is needed.
        if read.capacity() - read.len() < need {
            read.reserve(need.max(READ_CHUNK));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, read) {
            Poll::Pending => {
                if read.is_empty() && self.io.waits_unbuffered() {
                    *read = BytesMut::new();
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    /// Sends one message as one masked frame (a client's frames are masked).
    pub(crate) async fn send(&mut self, message: Message) -> io::Result<()> {
        match &message {
            Message::Text(t) => self.frame(0x1, t.as_bytes()),
            Message::Binary(b) => self.frame(0x2, b),
            Message::Ping(b) => self.frame(0x9, b),
            Message::Pong(b) => self.frame(0xA, b),
            Message::Close(None) => self.frame(0x8, &[]),
            Message::Close(Some(f)) => {
                let mut payload = Vec::with_capacity(2 + f.reason.len());
                payload.extend_from_slice(&f.code.to_be_bytes());
                payload.extend_from_slice(f.reason.as_bytes());
                self.frame(0x8, &payload);
            }
        }
        self.flush().await
    }

    /// Appends a masked frame to what is to be written.
    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let out = &mut self.out;
        out.reserve(14 + payload.len());
        out.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        out.extend_from_slice(&mask);
        let at = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[at..], mask);
    }

    /// Writes what is pending; the buffer is let go once it is all written.
    async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            let n = self.io.write(&self.out[self.written..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        self.io.flush().await?;
        self.out = Vec::new();
        self.written = 0;
        Ok(())
    }

    /// Sends `frame` — starting the close handshake, or answering the upstream's Close — and
    /// reads until the upstream's Close or the end of the connection (after the handshake a
    /// server ends the TCP connection, RFC 6455 §7.1.1), all within the close wait.
    pub(crate) async fn close(&mut self, frame: Option<CloseFrame>) {
        let _ = tokio::time::timeout(crate::protocol::CLOSE_WAIT, async {
            if self.send(Message::Close(frame)).await.is_ok() {
                while let Some(Ok(m)) = self.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// XORs `buf` with the repeated `mask` (eight bytes at a time where it can).
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::frames::frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The socket over a real TCP connection, and the upstream's end of it.
    async fn pair(max_message: usize, leftover: &[u8]) -> (UpstreamSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = UpstreamSocket::new(UpstreamIo::Plain(client), leftover, max_message);
        (socket, server)
    }

    /// Reads one masked frame as a server does: opcode and unmasked payload.
    async fn read_masked(server: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0] & 0xf0, 0x80, "one final frame, no reserved bits");
        assert_eq!(head[1] & 0x80, 0x80, "a client's frames are masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(server.read_u16().await.unwrap()),
            127 => server.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        server.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len as usize];
        server.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (head[0] & 0x0f, payload)
    }

    #[tokio::test]
    async fn messages_fragments_and_control_frames_are_read() {
        let first = frame(0x81, b"early");
        let (mut up, mut server) = pair(1024, &first).await;
        let mut bytes = frame(0x82, &[1, 2, 3]);
        bytes.extend(frame(0x01, b"hel"));
        bytes.extend(frame(0x89, b"ping"));
        bytes.extend(frame(0x00, b"lo "));
        bytes.extend(frame(0x80, "wörld".as_bytes()));
        bytes.extend(frame(0x82, &vec![7u8; 70_000][..1000]));
        bytes.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        server.write_all(&bytes).await.unwrap();

        let mut next = async || up.recv().await.unwrap().unwrap();
        assert_eq!(
            next().await,
            Message::Text("early".into()),
            "leftover first"
        );
        assert_eq!(next().await, Message::Binary(vec![1, 2, 3].into()));
        assert_eq!(
            next().await,
            Message::Ping("ping".into()),
            "between fragments"
        );
        assert_eq!(next().await, Message::Text("hello wörld".into()));
        assert_eq!(next().await, Message::Binary(vec![7u8; 1000].into()));
        let Message::Close(Some(f)) = next().await else {
            panic!("a close frame")
        };
        assert_eq!((f.code, f.reason.as_str()), (1000, "bye"));
        drop(server);
        assert!(up.recv().await.is_none(), "the end");
    }

    #[tokio::test]
    async fn a_large_frame_is_read_whole() {
        let (mut up, mut server) = pair(1 << 20, &[]).await;
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let bytes = frame(0x82, &big);
        tokio::spawn(async move { server.write_all(&bytes).await });
        assert_eq!(
            up.recv().await.unwrap().unwrap(),
            Message::Binary(big.into())
        );
    }

    #[tokio::test]
    async fn what_no_server_may_send_is_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("masked", vec![0x81, 0x81, 1, 2, 3, 4, b'x']),
            ("reserved bit", frame(0xc1, b"x")),
            ("unknown opcode", frame(0x83, b"x")),
            ("long control frame", frame(0x89, &[0u8; 126])),
            ("fragmented control frame", frame(0x09, b"x")),
            ("continuation first", frame(0x80, b"x")),
            (
                "a message inside a message",
                [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
            ),
            ("text not UTF-8", frame(0x81, &[0xff, 0xfe])),
            ("one-byte close", frame(0x88, &[0x03])),
            ("close code 1005", frame(0x88, &[0x03, 0xed])),
            ("close code 999", frame(0x88, &[0x03, 0xe7])),
            ("close reason not UTF-8", frame(0x88, &[0x03, 0xe8, 0xff])),
        ];
        for (case, bytes) in cases {
            let (mut up, mut server) = pair(1024, &[]).await;
            server.write_all(&bytes).await.unwrap();
            let got = up.recv().await;
            assert!(
                matches!(got, Some(Err(UpstreamError::Protocol(_)))),
                "{case}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn messages_past_the_bound_are_refused_before_they_are_read() {
        let (mut up, mut server) = pair(10, &[]).await;
        // Only the header is sent: the length alone refuses it.
        server
            .write_all(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        assert!(matches!(up.recv().await, Some(Err(UpstreamError::TooBig))));

        let (mut up, mut server) = pair(10, &[]).await;
        let bytes = [frame(0x02, &[0; 6]), frame(0x80, &[0; 6])].concat();
        server.write_all(&bytes).await.unwrap();
        assert!(
            matches!(up.recv().await, Some(Err(UpstreamError::TooBig))),
            "fragments add up"
        );
    }

    #[tokio::test]
    async fn frames_sent_are_masked_and_sized() {
        let (mut up, mut server) = pair(1024, &[]).await;
        for len in [0usize, 125, 126, 65_535, 65_536, 100_003] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            up.send(Message::Binary(payload.clone().into()))
                .await
                .unwrap();
            assert_eq!(read_masked(&mut server).await, (0x2, payload), "{len}");
        }
        up.send(Message::Text("hé".into())).await.unwrap();
        assert_eq!(
            read_masked(&mut server).await,
            (0x1, "hé".as_bytes().to_vec())
        );
        up.send(Message::Close(Some(CloseFrame {
            code: 4001,
            reason: "token_expired".into(),
        })))
        .await
        .unwrap();
        let (opcode, payload) = read_masked(&mut server).await;
        assert_eq!(opcode, 0x8);
        assert_eq!(&payload[..2], &4001u16.to_be_bytes());
        assert_eq!(&payload[2..], b"token_expired");
    }

    #[tokio::test]
    async fn an_idle_upstream_holds_no_buffer() {
        let (mut up, mut server) = pair(1 << 20, &[]).await;
        server.write_all(&frame(0x82, &[1; 3000])).await.unwrap();
        assert!(matches!(up.recv().await, Some(Ok(Message::Binary(_)))));
        up.send(Message::Text("x".into())).await.unwrap();
        // Nothing more comes: the read waits, holding nothing.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), up.recv()).await;
        assert!(waited.is_err(), "nothing to read");
        assert_eq!(up.frames.read.capacity(), 0, "no read buffer while idle");
        assert_eq!(up.out.capacity(), 0, "no write buffer once written");
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut masked = original.clone();
            apply_mask(&mut masked, mask);
            for (i, (m, o)) in masked.iter().zip(&original).enumerate() {
                assert_eq!(*m, o ^ mask[i % 4], "len {len} byte {i}");
            }
            apply_mask(&mut masked, mask);
            assert_eq!(masked, original);
        }
    }
}
