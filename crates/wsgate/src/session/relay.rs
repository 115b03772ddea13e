//! Proxying: the session guard's loop with an upstream WebSocket as a second
//! peer. Everything the guard enforces still holds (expiry, revocation, shutdown, limits),
//! and every way a relay can end is mapped to a close on each side ([`RelayEnd`]).

use axum::extract::ws::Message;
use tokio::time::Instant;

use super::{Session, ordered};
use crate::protocol::{CloseReason, SessionFrame};
use crate::registry::{CloseOrder, Order};
use crate::relay::{PeerError, Relayed, UpstreamSocket};

/// What woke the relay up.
enum RelayEvent {
    /// The session ended it (shutdown): both sides get this reason.
    Stop(CloseReason),
    /// An order from outside (a close, a grace period, a re-check's answer).
    Ordered(Order),
    /// The session's timer: expiry, idle check, `expiring`.
    Tick,
    /// A frame (or the end) from the upstream.
    Upstream(Option<Result<Relayed, PeerError>>),
    /// A frame (or the end) from the client (`Err`: see `ClientSide::recv`).
    Client(Option<Result<Relayed, Option<CloseReason>>>),
}

/// A client's pings forwarded to the upstream, whose pongs are not to be passed back, where
/// the client's side is tungstenite (under axum): it answers every ping it receives, so the
/// client has its pong already; the upstream's answer to the forwarded copy would be a
/// second one. A transparent proxy answers a ping exactly once. Unsolicited pongs
/// (heartbeats) pass. On a socket wsgate upgraded itself nothing is answered on either
/// side, so nothing is absorbed: the upstream's pong is the one answer.
#[derive(Default)]
struct Forwarded {
    /// Payloads of the pings forwarded and not yet answered, oldest first; at most
    /// [`Forwarded::MAX`] (a peer that never answers cannot grow it).
    pings: std::collections::VecDeque<axum::body::Bytes>,
}

impl Forwarded {
    const MAX: usize = 16;

    fn ping(&mut self, payload: &axum::body::Bytes) {
        if self.pings.len() == Self::MAX {
            self.pings.pop_front();
        }
        self.pings.push_back(payload.clone());
    }

    /// Whether this pong answers a forwarded ping (then it is absorbed, with the pings
    /// before it: a pong may answer only the latest of several).
    fn answers(&mut self, payload: &[u8]) -> bool {
        match self.pings.iter().position(|p| p[..] == *payload) {
            Some(i) => {
                self.pings.drain(..=i);
                true
            }
            None => false,
        }
    }
}

/// What ended a relay, and so how each side is closed.
enum RelayEnd {
    /// The session (or a limit) ended it: both sides get this reason.
    Both(CloseOrder),
    /// The client sent a close frame: the upstream gets it as is.
    ClientClosed(Option<axum::extract::ws::CloseFrame>),
    /// The upstream sent a close frame: the client gets it as is.
    UpstreamClosed(Option<axum::extract::ws::CloseFrame>),
    /// The client's connection is gone: the upstream gets [`CloseReason::ClientGone`].
    ClientLost,
    /// The upstream's connection is gone without a close frame: the client gets
    /// [`CloseReason::UpstreamGone`].
    UpstreamLost,
}

impl Session {
    /// Forwards frames between this socket and an upstream until either side or the session
    /// ends: text, binary, ping and pong both ways, unchanged and in order; close
    /// frames passed through with their code and reason; the session's own endings (expiry
    /// revocation, shutdown, limits) close both sides with the same [`CloseReason`].
    /// With `refresh_frames`, a client `refresh` frame is taken here and never forwarded.
    ///
    /// Backpressure: one frame is in flight at a time, so a side that does not read stops
    /// the reading of the other (memory stays bounded by the socket buffers), and a blocked
    /// write still yields to the session's endings — the idle period (or 60 s) passing
    /// without the write completing among them.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
    pub fn relay(
        mut self,
        upstream: crate::relay::Connected,
        refresh_frames: bool,
    ) -> impl Future<Output = ()> + Send {
        // Not an `async fn`: one keeps each argument twice for the socket's whole life (its
        // slot, and the local it is moved into); an `async move` block uses what it captured
        // in place. The session is the largest part of an idle connection's task.
        async move {
            let mut up = upstream.socket;
            self.relay_in_place(&mut up, refresh_frames).await;
        }
    }

    async fn relay_in_place(&mut self, up: &mut UpstreamSocket, refresh_frames: bool) {
        use crate::protocol::code_of;

        let (mut to_upstream, mut to_client) = (0u64, 0u64);
        // The client's pings sent on to the upstream (see `Forwarded`).
        let mut pinged_upstream = Forwarded::default();
        let client_answers_pings = self.socket.answers_itself();
        let end = loop {
            let event = tokio::select! {
                biased;
                _ = &mut self.shutdown => RelayEvent::Stop(CloseReason::Shutdown),
                order = ordered(&mut self.registration) => RelayEvent::Ordered(order),
                _ = &mut self.timer => RelayEvent::Tick,
                m = up.recv_relayed() => RelayEvent::Upstream(m),
                m = self.socket.recv_relayed() => RelayEvent::Client(m),
            };
            let msg = match event {
                RelayEvent::Stop(reason) => break RelayEnd::Both(reason.into()),
                RelayEvent::Ordered(order) => match Box::pin(self.take_order(order)).await {
                    Ok(_) => continue,
                    Err(close) => break RelayEnd::Both(close),
                },
                RelayEvent::Tick => match self.tick().await {
                    Some(order) => break RelayEnd::Both(order),
                    None => continue,
                },
                RelayEvent::Upstream(from_upstream) => match from_upstream {
                    Some(Ok(Relayed::Message(Message::Close(f)))) => {
                        break RelayEnd::UpstreamClosed(f);
                    }
                    Some(Ok(Relayed::Message(Message::Pong(p)))) if pinged_upstream.answers(&p) => {
                        continue;
                    }
                    Some(Ok(m)) => {
                        // The client is owed text that is UTF-8 (its socket would fail).
                        if let Err(e) = m.text() {
                            break self.upstream_lost(&e);
                        }
                        to_client += 1;
                        let (socket, stops) = self.split();
                        match stops.bound(socket.send_relayed(m)).await {
                            Ok(true) => continue,
                            Ok(false) => break RelayEnd::ClientLost,
                            Err(reason) => break RelayEnd::Both(reason),
                        }
                    }
                    // A message past what the relay takes: both sides are told why.
                    Some(Err(PeerError::TooBig)) => {
                        break RelayEnd::Both(CloseReason::TooBig.into());
                    }
                    Some(Err(e)) => break self.upstream_lost(&e),
                    None => break RelayEnd::UpstreamLost,
                },
                RelayEvent::Client(from_client) => from_client,
            };
            match msg {
                Some(Ok(Relayed::Message(Message::Close(f)))) => break RelayEnd::ClientClosed(f),
                Some(Ok(m)) => {
                    if let Relayed::Message(Message::Ping(p)) = &m
                        && client_answers_pings
                    {
                        pinged_upstream.ping(p);
                    }
                    if m.is_data() && self.over_rate(Instant::now()) {
                        break RelayEnd::Both(CloseReason::RateLimited.into());
                    }
                    let text = match m.text() {
                        Ok(text) => text,
                        Err(e) => match e.close_reason() {
                            Some(reason) => break RelayEnd::Both(reason.into()),
                            None => break RelayEnd::ClientLost,
                        },
                    };
                    // A credential never reaches the upstream: a `refresh` with a token is
                    // taken here when the endpoint speaks refresh frames, and any other
                    // frame carrying one (an `auth` after the handshake, a `refresh` where
                    // refresh frames are off) is dropped and counted.
                    if let Some(t) = text
                        && let Some(frame) = SessionFrame::of(t)
                        && frame.carries_credential()
                    {
                        if refresh_frames && frame.refresh {
                            if let Some(reason) = Box::pin(self.refresh(t)).await {
                                break RelayEnd::Both(reason.into());
                            }
                            self.refreshed = false;
                        } else {
                            let kind = if frame.auth { "auth" } else { "refresh" };
                            crate::metrics::credential_frame_dropped(kind);
                            tracing::warn!(
                                target: "wsgate::conn",
                                sub = self.identity.sub(),
                                session = self.identity.session(),
                                frame = kind,
                                "a client frame carrying a credential was not forwarded upstream"
                            );
                        }
                        continue;
                    }
                    to_upstream += 1;
                    let (_, stops) = self.split();
                    match stops.bound(up.send_relayed(m)).await {
                        Ok(true) => {}
                        Ok(false) => break RelayEnd::UpstreamLost,
                        Err(reason) => break RelayEnd::Both(reason),
                    }
                }
                Some(Err(Some(reason))) => break RelayEnd::Both(reason.into()),
                Some(Err(None)) | None => break RelayEnd::ClientLost,
            }
        };
        let code = match &end {
            RelayEnd::Both(order) => Some(order.reason.code()),
            RelayEnd::ClientClosed(f) | RelayEnd::UpstreamClosed(f) => Some(code_of(f.as_ref())),
            RelayEnd::ClientLost => None,
            RelayEnd::UpstreamLost => Some(CloseReason::UpstreamGone.code()),
        };
        tracing::info!(
            target: "wsgate::conn",
            sub = self.identity.sub(),
            session = self.identity.session(),
            to_upstream,
            to_client,
            close = code.map_or_else(|| "client gone".to_owned(), |c| c.to_string()),
            "proxied connection ended"
        );
        crate::metrics::proxied_frames(to_upstream, to_client);
        (self.msgs_in, self.msgs_out) = (to_upstream, to_client);
        match end {
            RelayEnd::Both(order) => {
                tokio::join!(
                    self.close_in_place(order),
                    up.close(Some(order.reason.frame()))
                );
            }
            RelayEnd::ClientClosed(f) => {
                self.closed_with = code;
                self.close_phrase = "client closed";
                tokio::join!(self.socket.answer_close(f.clone()), up.close(f));
            }
            RelayEnd::UpstreamClosed(f) => {
                self.closed_with = code;
                self.close_phrase = "upstream closed";
                // The upstream's close goes to the client, and is answered with itself.
                tokio::join!(self.socket.close_then(f.clone(), || {}), up.close(f));
            }
            RelayEnd::ClientLost => up.close(Some(CloseReason::ClientGone.frame())).await,
            RelayEnd::UpstreamLost => self.close_in_place(CloseReason::UpstreamGone).await,
        }
    }

    /// The upstream broke the protocol or its connection failed: said in the log, and the
    /// client is told the upstream is gone.
    fn upstream_lost(&self, e: &PeerError) -> RelayEnd {
        tracing::info!(
            target: "wsgate::conn",
            sub = self.identity.sub(),
            session = self.identity.session(),
            error = %e,
            "upstream lost"
        );
        RelayEnd::UpstreamLost
    }
}
