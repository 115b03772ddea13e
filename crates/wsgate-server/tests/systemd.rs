//! Under systemd (`Type=notify`): the server says READY once it listens, RELOADING and READY
//! around a reload, STOPPING when it drains — datagrams to `$NOTIFY_SOCKET`, read here by a
//! real socket as systemd would.

mod common;

use common::*;
use tokio::net::UnixDatagram;

async fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_server_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let s = Server::start_with(HS256_CONFIG, &[("NOTIFY_SOCKET", path.to_str().unwrap())]).await;

    let ready = next_state(&socket).await;
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", s.addr)),
        "{ready}"
    );
    // Ready means ready: a client is served now.
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("unit"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");

    s.signal("HUP");
    assert!(next_state(&socket).await.starts_with("RELOADING=1\n"));
    let reloaded = next_state(&socket).await;
    assert!(
        reloaded.starts_with("READY=1\n") && reloaded.contains("config generation 2 live"),
        "{reloaded}"
    );

    s.signal("TERM");
    assert!(next_state(&socket).await.starts_with("STOPPING=1\n"));
    assert_eq!(expect_close(&mut ws).await.0, 1001);
}
