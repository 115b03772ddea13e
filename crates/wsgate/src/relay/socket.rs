//! A WebSocket spoken by wsgate itself, over any byte stream: the upstream's (wsgate is its
//! client, RFC 6455's client role) and, on echo and proxy endpoints, the client's (wsgate is its
//! server).
//!
//! Why not tungstenite, as on the other endpoints' sockets: its reader allocates a read
//! buffer at the upgrade and keeps it for the connection's whole life (2 KiB for every
//! connection, idle or not), and it answers pings and closes inside its reads, so a relay
//! that forwards them too answers twice. Here:
//! - a frame's bytes are held only while it is being read: a read that waits holds no buffer
//!   (it reads onto the stack and keeps only what came), and what was sent is dropped once
//!   written;
//! - nothing is answered on the relay's behalf: a ping goes on to the other side, whose pong
//!   comes back; a close is answered when the relay answers it;
//! - a large frame is read straight into a buffer of its own size, not 2 KiB at a time.
//!
//! The frames themselves are read in `frames.rs` ([`FrameReader`]); this file is the I/O.
//!
//! Cancel safety: the relay selects over [`FrameSocket::recv`] and bounds
//! [`FrameSocket::send`] by the session's endings, so either may be dropped at any await.
//! What was read, or half written, stays here and the next call carries on from it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::UpstreamIo;
use super::frames::{DataFrame, FrameReader, Parsed, Peer, PeerError, apply_mask};

/// How much is read at a time when no frame asks for more.
const READ_CHUNK: usize = 2048;

/// A connected upstream WebSocket: its frames come unmasked, ours go masked.
pub type UpstreamSocket = FrameSocket<UpstreamIo>;

/// A client's WebSocket, upgraded by wsgate itself ([`super::ClientUpgrade`]).
pub type ClientSocket = FrameSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket over `Io`: frames in as [`Message`]s, frames out as one `peer` expects.
pub struct FrameSocket<Io> {
    io: Io,
    /// What was read and not yet taken as frames.
    frames: FrameReader,
    /// The other side: a server (our frames are masked) or a client (they are not).
    peer: Peer,
    /// The peer's Close was read.
    peer_closed: bool,
    /// Frames sent and not yet all written (a send the relay cut short); empty when idle.
    out: BytesMut,
    written: usize,
}

/// What a relay passes from one side to the other: a data message as the bytes it came in,
/// or any other message (a control frame, a message that came in fragments, or one read by
/// tungstenite).
#[derive(Debug)]
pub(crate) enum Relayed {
    Data(DataFrame),
    Message(Message),
}

impl Relayed {
    /// Whether it is a data message (text or binary), which the session counts and limits.
    pub(crate) fn is_data(&self) -> bool {
        matches!(
            self,
            Relayed::Data(_) | Relayed::Message(Message::Text(_) | Message::Binary(_))
        )
    }

    /// A data message's text (`None` for anything else); refused when not UTF-8.
    pub(crate) fn text(&self) -> Result<Option<&str>, PeerError> {
        match self {
            Relayed::Data(d) => d.text(),
            Relayed::Message(Message::Text(t)) => Ok(Some(t.as_str())),
            Relayed::Message(_) => Ok(None),
        }
    }

    /// As a message (a data frame's text checked for UTF-8).
    pub(crate) fn into_message(self) -> Result<Message, PeerError> {
        match self {
            Relayed::Data(d) => d.into_message(),
            Relayed::Message(m) => Ok(m),
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> FrameSocket<Io> {
    /// The socket to `peer` over `io`, with `read` the bytes that came with the handshake.
    pub(crate) fn new(peer: Peer, io: Io, read: &[u8], max_message: usize) -> Self {
        Self {
            io,
            frames: FrameReader::new(peer, read, max_message),
            peer,
            peer_closed: false,
            out: BytesMut::new(),
            written: 0,
        }
    }

    /// The next message or control frame; `None` once the connection has ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Message, PeerError>> {
        Some(self.recv_relayed().await?.and_then(Relayed::into_message))
    }

    /// [`FrameSocket::recv`], with a message that came in one frame kept as its bytes (its
    /// text not yet checked: see [`DataFrame`]), to be sent on by
    /// [`FrameSocket::send_relayed`] with no copy.
    pub(crate) async fn recv_relayed(&mut self) -> Option<Result<Relayed, PeerError>> {
        loop {
            match self.frames.parse() {
                Ok(Parsed::Data(d)) => return Some(Ok(Relayed::Data(d))),
                Ok(Parsed::Message(m)) => {
                    self.peer_closed |= matches!(m, Message::Close(_));
                    return Some(Ok(Relayed::Message(m)));
                }
                Ok(Parsed::Fragment) => {}
                Ok(Parsed::Need(n)) => {
                    match std::future::poll_fn(|cx| self.poll_fill(cx, n)).await {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) => return Some(Err(PeerError::Io(self.peer.name(), e))),
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads more bytes, with room for at least `need` more.
    fn poll_fill(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<io::Result<usize>> {
        let read = &mut self.frames.read;
        if read.is_empty() {
            // Idle, or between frames: read onto the stack and keep only what came, so that
            // a read that waits holds no buffer (and no tail of the last frame's).
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
            *read = BytesMut::from(buf.filled());
            return polled.map_ok(|()| buf.filled().len());
        }
        // `need` is at least 1, and bounded: a frame's length is checked before it is needed.
        if read.capacity() - read.len() < need {
            read.reserve(need.max(READ_CHUNK));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, read)
    }

    /// Sends one message as one frame, and flushes.
    pub(crate) async fn send(&mut self, message: Message) -> io::Result<()> {
        let mut message = Some(message);
        std::future::poll_fn(|cx| self.poll_send(cx, &mut message)).await
    }

    /// Queues `message` (when given, taking it) and writes what is queued; ready once all of
    /// it is written and flushed.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
    ) -> Poll<io::Result<()>> {
        match message.take() {
            Some(Message::Text(t)) => self.frame(0x1, t.as_bytes()),
            Some(Message::Binary(b)) => self.frame(0x2, &b),
            Some(Message::Ping(b)) => self.frame(0x9, &b),
            Some(Message::Pong(b)) => self.frame(0xA, &b),
            Some(Message::Close(None)) => self.frame(0x8, &[]),
            Some(Message::Close(Some(f))) => {
                let mut payload = Vec::with_capacity(2 + f.reason.len());
                payload.extend_from_slice(&f.code.to_be_bytes());
                payload.extend_from_slice(f.reason.as_bytes());
                self.frame(0x8, &payload);
            }
            None => {}
        }
        self.poll_flush(cx)
    }

    /// Sends what another socket received, and flushes.
    pub(crate) async fn send_relayed(&mut self, relayed: Relayed) -> io::Result<()> {
        let mut relayed = Some(relayed);
        std::future::poll_fn(|cx| self.poll_send_relayed(cx, &mut relayed)).await
    }

    /// [`FrameSocket::poll_send`] for what another socket received: a data frame goes out as
    /// the bytes it came in when its header is what this peer takes (masked for a server,
    /// unmasked for a client, its length in the fewest bytes); a client's frame to a server
    /// is masked again in place, with a key of ours. Anything else is encoded afresh.
    fn poll_send_relayed(
        &mut self,
        cx: &mut Context<'_>,
        relayed: &mut Option<Relayed>,
    ) -> Poll<io::Result<()>> {
        match relayed.take() {
            Some(Relayed::Data(d)) => self.data_frame(d),
            Some(Relayed::Message(m)) => return self.poll_send(cx, &mut Some(m)),
            None => {}
        }
        self.poll_flush(cx)
    }

    /// Appends a received data frame to what is to be written, as it came where it can be.
    fn data_frame(&mut self, mut d: DataFrame) {
        let to_server = self.peer == Peer::Server;
        if !d.minimal || d.is_masked() != to_server || !self.out.is_empty() {
            let opcode = d.bytes[0] & 0x0f;
            return self.frame(opcode, d.payload());
        }
        if to_server {
            // The client's key is not passed on: who sends a server bytes chooses the mask
            // (RFC 6455 §10.3), so a client cannot choose what goes over the upstream's wire.
            let mask: [u8; 4] = rand::random();
            let at = d.payload_at;
            d.bytes[at - 4..at].copy_from_slice(&mask);
            apply_mask(&mut d.bytes[at..], mask);
        }
        self.out = d.bytes;
    }

    /// Appends a frame to what is to be written: masked when the peer is a server.
    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let masked = self.peer == Peer::Server;
        let mask_bit = if masked { 0x80 } else { 0 };
        let out = &mut self.out;
        out.reserve(14 + payload.len());
        out.put_u8(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.put_u8(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let mask: [u8; 4] = rand::random();
            out.extend_from_slice(&mask);
            let at = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[at..], mask);
        } else {
            out.extend_from_slice(payload);
        }
    }

    /// Writes what is pending; the buffer is let go once it is all written.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.out = BytesMut::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends `frame` — starting the close handshake, or answering the peer's Close — all
    /// within the close wait. Then, unless it answered a client (whose connection the server
    /// ends, RFC 6455 §7.1.1: dropping the socket does), reads until the peer's Close or the
    /// end of the connection (after the handshake a server ends the TCP connection).
    pub async fn close(&mut self, frame: Option<CloseFrame>) {
        self.close_then(frame, || {}).await;
    }

    /// [`FrameSocket::close`], calling `sent` once the close frame is on the wire.
    pub(crate) async fn close_then(&mut self, frame: Option<CloseFrame>, sent: impl FnOnce()) {
        let answered_client = self.peer_closed && self.peer == Peer::Client;
        let _ = tokio::time::timeout(crate::protocol::CLOSE_WAIT, async {
            if self.send(Message::Close(frame)).await.is_err() {
                return;
            }
            sent();
            if answered_client {
                return;
            }
            while let Some(Ok(m)) = self.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// The `auth` frame is awaited on wsgate's own socket too: the server upgrades every client
/// itself, whichever way its credential comes.
impl crate::authenticator::AuthSocket for ClientSocket {
    async fn next_data(&mut self) -> Option<Message> {
        loop {
            match self.recv().await?.ok()? {
                // Nothing answers on this socket's behalf: the wait does.
                Message::Ping(p) => self.send(Message::Pong(p)).await.ok()?,
                Message::Pong(_) => {}
                Message::Close(frame) => {
                    self.close(frame).await;
                    return None;
                }
                data => return Some(data),
            }
        }
    }

    async fn refuse(mut self, reason: crate::protocol::CloseReason) {
        self.close(Some(reason.frame())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::frames::frame;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The socket over a real TCP connection, and the upstream's end of it.
    async fn pair(max_message: usize, leftover: &[u8]) -> (UpstreamSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = UpstreamSocket::new(
            Peer::Server,
            UpstreamIo::Plain(client),
            leftover,
            max_message,
        );
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
                matches!(got, Some(Err(PeerError::Protocol(..) | PeerError::Utf8(_)))),
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
        assert!(matches!(up.recv().await, Some(Err(PeerError::TooBig))));

        let (mut up, mut server) = pair(10, &[]).await;
        let bytes = [frame(0x02, &[0; 6]), frame(0x80, &[0; 6])].concat();
        server.write_all(&bytes).await.unwrap();
        assert!(
            matches!(up.recv().await, Some(Err(PeerError::TooBig))),
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

    #[tokio::test]
    async fn a_clients_socket_unmasks_what_comes_sends_unmasked_and_holds_nothing_idle() {
        use crate::relay::frames::masked;
        let (mut ours, mut client) = client_pair().await;
        client
            .write_all(&masked(0x81, b"hello", [9, 8, 7, 6]))
            .await
            .unwrap();
        assert_eq!(
            ours.recv().await.unwrap().unwrap(),
            Message::Text("hello".into())
        );
        ours.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x82, 3, 1, 2, 3], "a server's frames go unmasked");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), ours.recv()).await;
        assert!(waited.is_err(), "nothing to read");
        assert_eq!(ours.frames.read.capacity(), 0, "no read buffer while idle");
        // The client closes: the answer is its own close, and nothing more is awaited.
        client
            .write_all(&masked(0x88, &[0x03, 0xe8], [1, 1, 1, 1]))
            .await
            .unwrap();
        let Message::Close(frame) = ours.recv().await.unwrap().unwrap() else {
            panic!("a close frame")
        };
        let started = std::time::Instant::now();
        ours.close(frame).await;
        assert!(
            started.elapsed() < crate::protocol::CLOSE_WAIT / 2,
            "no wait"
        );
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x88, 2, 0x03, 0xe8]);
    }

    /// A client's socket (wsgate's end) and the client's raw end.
    async fn client_pair() -> (FrameSocket<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (FrameSocket::new(Peer::Client, server, &[], 1 << 20), client)
    }

    #[tokio::test]
    async fn a_relayed_frame_goes_on_in_the_buffer_it_was_read_into_masked_with_our_key() {
        use crate::relay::frames::masked;
        let (mut ours, mut client) = client_pair().await;
        let (mut up, mut server) = pair(1 << 20, &[]).await;
        let key = [0x11, 0x22, 0x33, 0x44];
        for payload in [&b"hello"[..], &[7u8; 300][..], &[9u8; 70_000][..]] {
            client.write_all(&masked(0x82, payload, key)).await.unwrap();
            let Some(Ok(Relayed::Data(d))) = ours.recv_relayed().await else {
                panic!("a data frame")
            };
            let read_into = d.bytes.as_ptr();
            up.data_frame(d);
            assert_eq!(up.out.as_ptr(), read_into, "no copy");
            let at = up.out.len() - payload.len();
            assert_ne!(up.out[at - 4..at], key, "the client's key is not passed on");
            up.send_relayed(Relayed::Message(Message::Ping(Bytes::new())))
                .await
                .unwrap();
            assert_eq!(read_masked(&mut server).await, (0x2, payload.to_vec()));
            assert_eq!(read_masked(&mut server).await, (0x9, vec![]));
        }
        // And back: the upstream's frame reaches the client as the bytes it sent.
        let sent = frame(0x81, "wörld".as_bytes());
        server.write_all(&sent).await.unwrap();
        let Some(Ok(relayed)) = up.recv_relayed().await else {
            panic!("a frame")
        };
        assert_eq!(relayed.text().unwrap(), Some("wörld"));
        ours.send_relayed(relayed).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_frame_whose_length_is_not_written_shortest_is_sent_on_rewritten() {
        let (mut ours, mut client) = client_pair().await;
        // "hi" with its length in the 16-bit field: taken, but not passed on as it came.
        let mut long_form = vec![0x81, 0x80 | 126, 0, 2, 1, 2, 3, 4];
        long_form.extend_from_slice(&[b'h' ^ 1, b'i' ^ 2]);
        client.write_all(&long_form).await.unwrap();
        let Some(Ok(relayed)) = ours.recv_relayed().await else {
            panic!("a frame")
        };
        let (mut up, mut server) = pair(1 << 20, &[]).await;
        up.send_relayed(relayed).await.unwrap();
        let mut head = [0u8; 2];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(head, [0x81, 0x80 | 2], "the shortest length");
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
