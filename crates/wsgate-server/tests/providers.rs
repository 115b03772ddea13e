//! Identity providers as they are through the binary: several issuers routed by
//! `iss` with keys that never cross, claim mapping, OpenID discovery (and what happens when
//! it fails), the provider's name where operators and upstreams see it.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::get;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// Two providers whose key sets both publish a key under the kid `rsa-1` (different keys).
fn two_providers(extra: &str) -> String {
    format!(
        r#"
[[auth.providers]]
name = "corp"
issuer = "https://corp.example"
algorithms = ["RS256"]
jwks_file = "{a}"

[[auth.providers]]
name = "partners"
issuer = "https://partners.example"
algorithms = ["RS256"]
jwks_file = "{b}"
claims = {{ subject = "oid", channels = "realm_access.roles", publish = "scp" }}
{extra}
[[endpoints]]
path = "/ws"
kind = "pubsub"
"#,
        a = fixture("jwks.json").display(),
        b = fixture("jwks_b.json").display(),
    )
}

fn rs256(key: Key, claims: &Value) -> String {
    jwt(Algorithm::RS256, key, Some("rsa-1"), claims)
}

#[tokio::test]
async fn tokens_go_to_their_issuers_provider_and_keys_never_cross() {
    let s = Server::start(&two_providers("")).await;
    let exp = now() + 600;
    let corp = rs256(
        Key::Rsa,
        &json!({"sub":"ann","iss":"https://corp.example","exp":exp}),
    );
    let mut ws = bearer(&s.url("/ws"), &corp).await;
    assert_eq!(next_json(&mut ws).await["sub"], "ann");
    // Signed with corp's key under the shared kid, claiming the partners' issuer: the
    // partners' key set alone is consulted, and its rsa-1 is another key.
    let crossed = rs256(
        Key::Rsa,
        &json!({"oid":"mallory","iss":"https://partners.example","exp":exp}),
    );
    assert_invalid(&s.url("/ws"), &crossed).await;
    // And the other way round.
    let crossed = rs256(
        Key::RsaB,
        &json!({"sub":"mallory","iss":"https://corp.example","exp":exp}),
    );
    assert_invalid(&s.url("/ws"), &crossed).await;
    // An issuer no provider answers for, or none at all: 401.
    for iss in [json!("https://elsewhere.example"), json!(null)] {
        let t = rs256(Key::Rsa, &json!({"sub":"ann","iss":iss,"exp":exp}));
        assert_invalid(&s.url("/ws"), &t).await;
    }
    let logs = s.logs_once("connection accepted", 1).await;
    assert!(
        logs.contains("provider=corp") || logs.contains("provider=\"corp\""),
        "{logs}"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("wsgate_provider_connections_total{provider=\"corp\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn claims_are_read_where_the_provider_puts_them() {
    let s = Server::start(&two_providers("")).await;
    let claims = json!({
        "oid": "u-42", "iss": "https://partners.example", "exp": now() + 600,
        "realm_access": {"roles": ["room:*", "news"]}, "scp": "room:a room:b"
    });
    let mut ws = bearer(&s.url("/ws"), &rs256(Key::RsaB, &claims)).await;
    assert_eq!(next_json(&mut ws).await["sub"], "u-42");
    send_text(&mut ws, r#"{"type":"subscribe","channel":"room:x","id":1}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    send_text(&mut ws, r#"{"type":"subscribe","channel":"other","id":2}"#).await;
    assert_eq!(next_json(&mut ws).await["code"], "forbidden");
    send_text(
        &mut ws,
        r#"{"type":"publish","channel":"room:b","data":1,"id":3}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "published");
    send_text(
        &mut ws,
        r#"{"type":"publish","channel":"room:x","data":1,"id":4}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "forbidden");
    // The mapped subject must be a non-empty string.
    for oid in [json!(null), json!(""), json!(7)] {
        let t = rs256(
            Key::RsaB,
            &json!({"oid":oid,"iss":"https://partners.example","exp":now()+60}),
        );
        assert_invalid(&s.url("/ws"), &t).await;
    }
}

/// An OpenID provider's discovery document and key set, as a real HTTP server would serve
/// them; `issuer_in_doc` lets a test make the document lie about who it is.
async fn openid_provider(issuer_in_doc: Option<&str>) -> String {
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks.json")).unwrap()).unwrap();
    openid_provider_with(issuer_in_doc, Arc::new(Mutex::new(jwks))).await
}

/// The same, serving whatever `jwks` holds at each request (a key rotation swaps it).
async fn openid_provider_with(issuer_in_doc: Option<&str>, jwks: Arc<Mutex<Value>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://127.0.0.1:{}/realms/a",
        listener.local_addr().unwrap().port()
    );
    let doc = json!({
        "issuer": issuer_in_doc.map_or(base.clone(), str::to_owned),
        "jwks_uri": format!("{base}/protocol/openid-connect/certs"),
    });
    let app = axum::Router::new()
        .route(
            "/realms/a/.well-known/openid-configuration",
            get(move || async move { Json(doc) }),
        )
        .route(
            "/realms/a/protocol/openid-connect/certs",
            get(move || async move { Json(jwks.lock().unwrap().clone()) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_unknown_kid() {
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks.json")).unwrap()).unwrap();
    let served = Arc::new(Mutex::new(jwks));
    let issuer = openid_provider_with(None, served.clone()).await;
    let s = Server::start(&two_providers(&discovered(&issuer))).await;
    let old = rs256(
        Key::Rsa,
        &json!({"sub":"before","iss":issuer,"exp":now()+600}),
    );
    let mut ws = bearer(&s.url("/ws"), &old).await;
    assert_eq!(next_json(&mut ws).await["sub"], "before");
    // The IdP rotates: the new key (jwks_b's) is published under a new kid, the old one gone.
    let mut rotated: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks_b.json")).unwrap()).unwrap();
    rotated["keys"][0]["kid"] = json!("rsa-2");
    *served.lock().unwrap() = rotated;
    let claims = json!({"sub":"after","iss":issuer,"exp":now()+600});
    let new = jwt(Algorithm::RS256, Key::RsaB, Some("rsa-2"), &claims);
    // An unknown kid refetches at most once per 10 s (since the fetch at start).
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    let mut ws = bearer(&s.url("/ws"), &new).await;
    assert_eq!(next_json(&mut ws).await["sub"], "after");
}

fn discovered(issuer: &str) -> String {
    format!(
        r#"
[[auth.providers]]
name = "keycloak"
issuer = "{issuer}"
discovery = true
algorithms = ["RS256", "ES256"]
"#
    )
}

// Multi-threaded: `check-config` runs as a blocking child while this runtime serves the IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_through_openid_discovery() {
    let issuer = openid_provider(None).await;
    let s = Server::start(&two_providers(&discovered(&issuer))).await;
    let t = rs256(Key::Rsa, &json!({"sub":"kc","iss":issuer,"exp":now()+600}));
    let mut ws = bearer(&s.url("/ws"), &t).await;
    assert_eq!(next_json(&mut ws).await["sub"], "kc");
    let ec = jwt(
        Algorithm::ES256,
        Key::Ec,
        Some("ec-1"),
        &json!({"sub":"kc2","iss":issuer,"exp":now()+600}),
    );
    let mut ws = bearer(&s.url("/ws"), &ec).await;
    assert_eq!(next_json(&mut ws).await["sub"], "kc2");
    // check-config says what it found.
    let (code, out, err) = run_cli(
        s.dir.path(),
        &["check-config", "--config", "wsgate.toml"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("provider keycloak: discovery of {issuer}: 2 keys")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_keys_cannot_be_had_answers_503_and_the_others_work() {
    // The document names another issuer (a discovery document speaking for someone else).
    let liar = openid_provider(Some("https://someone-else.example")).await;
    // And a provider whose host does not answer at all.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/realms/gone")
    };
    let extra = format!(
        "{}\n[[auth.providers]]\nname = \"gone\"\nissuer = \"{gone}\"\ndiscovery = true\nalgorithms = [\"RS256\"]\n",
        discovered(&liar)
    );
    let s = Server::start(&two_providers(&extra)).await;
    for iss in [&liar, &gone] {
        let t = rs256(Key::Rsa, &json!({"sub":"x","iss":iss,"exp":now()+600}));
        let r = refused(&s.url("/ws"), &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 503, "{iss}: never a silent 401");
        assert_eq!(r.body["error"], "auth_unavailable");
    }
    // Every other provider keeps working.
    let corp = rs256(
        Key::Rsa,
        &json!({"sub":"ann","iss":"https://corp.example","exp":now()+600}),
    );
    let mut ws = bearer(&s.url("/ws"), &corp).await;
    assert_eq!(next_json(&mut ws).await["sub"], "ann");
    // check-config names the provider and why.
    let (code, out, _) = run_cli(
        s.dir.path(),
        &["check-config", "--config", "wsgate.toml"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("provider keycloak") && out.contains("someone-else.example"),
        "{out}"
    );
    assert!(
        out.contains("provider gone") && out.contains("its tokens get 503"),
        "{out}"
    );
}

#[test]
fn provider_configs_that_cannot_route_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (config, needle) in [
        (
            "[[auth.providers]]\nname = \"a\"\nissuer = \"https://i\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nalgorithms = [\"HS256\"]\n[[auth.providers]]\nname = \"b\"\nissuer = \"https://i\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nalgorithms = [\"HS256\"]\n",
            "auth.providers[1].issuer: another provider has the issuer",
        ),
        (
            "[auth.jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[[auth.providers]]\nname = \"b\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nalgorithms = [\"HS256\"]\n",
            "auth.providers[0].issuer: at most one provider may have no issuer",
        ),
        (
            "[[auth.providers]]\nname = \"jwt\"\nissuer = \"https://i\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nalgorithms = [\"HS256\"]\n[auth.jwt]\nissuer = \"https://j\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            "auth.providers[0].name: `jwt` is the name of [auth.jwt]",
        ),
        (
            "[[auth.providers]]\nname = \"d\"\ndiscovery = true\n",
            "auth.providers[0].discovery: needs `issuer`",
        ),
        (
            "[[auth.providers]]\nname = \"d\"\nissuer = \"http://idp.example\"\ndiscovery = true\n",
            "auth.providers[0].issuer",
        ),
        (
            "[[auth.providers]]\nname = \"k\"\nissuer = \"https://i\"\n",
            "auth.providers[0].name: has no keys",
        ),
        (
            "[[auth.providers]]\nname = \"bad name\"\nissuer = \"https://i\"\njwks_url = \"https://i/k\"\n",
            "auth.providers[0].name",
        ),
        (
            "[[auth.providers]]\nname = \"c\"\nissuer = \"https://i\"\njwks_url = \"https://i/k\"\nclaims = { subject = \"a..b\" }\n",
            "auth.providers[0].claims.subject",
        ),
    ] {
        let cfg = dir.path().join("p.toml");
        std::fs::write(
            &cfg,
            format!("{config}\n[[endpoints]]\npath = \"/ws\"\nkind = \"pubsub\"\n"),
        )
        .unwrap();
        let (code, _, err) = run_cli(
            dir.path(),
            &["check-config", "--config", cfg.to_str().unwrap()],
            &[],
        );
        assert_eq!(code, 1, "{config}");
        assert!(err.contains(needle), "{config}\n{err}");
    }
}

/// An endpoint that requires claims, beside one that does not.
fn with_policy(reject: &str) -> String {
    format!(
        r#"
[auth]
reject = "{reject}"
[auth.static]
tokens = {{ "static-token" = "svc" }}
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[[endpoints]]
path = "/ops"
kind = "echo"
require = {{ scope = "chat", roles = ["member"], "realm_access.roles" = ["ops"], tenant = "acme" }}
[[endpoints]]
path = "/open"
kind = "echo"
"#
    )
}

fn policy_claims(sub: &str) -> Value {
    json!({
        "sub": sub, "exp": now() + 600,
        "scope": "read chat", "roles": ["member", "x"],
        "realm_access": {"roles": ["ops"]}, "tenant": "acme"
    })
}

#[tokio::test]
async fn an_endpoint_takes_only_credentials_that_hold_its_requirements() {
    let s = Server::start(&with_policy("http")).await;
    let mut ws = bearer(&s.url("/ops"), &hs256(&policy_claims("ok"))).await;
    assert_eq!(next_json(&mut ws).await["sub"], "ok");
    for (claim, value) in [
        ("scope", json!("read")),
        ("roles", json!(["x"])),
        ("realm_access", json!({"roles": ["dev"]})),
        ("tenant", json!("acme-evil")),
    ] {
        let mut c = policy_claims("no");
        c[claim] = value;
        let r = refused(
            &s.url("/ops"),
            &[("authorization", &format!("Bearer {}", hs256(&c)))],
        )
        .await;
        assert_eq!(r.status, 403, "{claim}");
        assert_eq!(r.body["error"], "insufficient_scope");
        assert_eq!(
            r.headers["www-authenticate"], r#"Bearer error="insufficient_scope""#,
            "RFC 6750 §3.1"
        );
    }
    // Credentials without claims hold no requirement; the open endpoint takes them.
    let r = refused(&s.url("/ops"), &[("authorization", "Bearer static-token")]).await;
    assert_eq!(r.status, 403);
    let mut open = bearer(&s.url("/open"), "static-token").await;
    assert_eq!(next_json(&mut open).await["sub"], "svc");
    // A refresh is held to it: a valid token of the subject without the scope changes nothing.
    let mut lacking = policy_claims("ok");
    lacking["scope"] = json!("read");
    send_text(
        &mut ws,
        &json!({"type":"refresh","id":1,"token":hs256(&lacking)}).to_string(),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("insufficient_scope"), Some(1))
    );
}

#[tokio::test]
async fn with_reject_close_a_missing_scope_closes_1008() {
    let s = Server::start(&with_policy("close")).await;
    let mut c = policy_claims("no");
    c["tenant"] = json!("other");
    let mut ws = bearer(&s.url("/ops"), &hs256(&c)).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (1008, "insufficient_scope".into())
    );
}
