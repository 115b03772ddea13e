//! systemd's readiness protocol (`sd_notify`), so a `Type=notify` unit counts as started only
//! once the server listens, and an operator sees a reload and a drain in `systemctl status`.
//!
//! One datagram per state change to the socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`); without that variable (not under systemd) nothing is
//! sent. A failure to send is logged at debug and otherwise ignored: readiness reporting
//! never stops the server.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The server listens and takes connections.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// A reload has started; [`ready`] ends it.
pub fn reloading() {
    send("RELOADING=1\nSTATUS=reloading the config");
}

/// The server drains its sockets and will exit.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining sockets");
}

fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let addr = match target.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&target)?,
        };
        UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        tracing::debug!(target: "wsgate::notify", error = %e, "cannot notify systemd");
    }
}
