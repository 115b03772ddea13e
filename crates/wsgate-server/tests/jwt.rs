//! JWT verification through the server: every algorithm family and key source, and the
//! attacks a gateway must refuse.

mod common;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use jsonwebtoken::Algorithm::{self, *};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn accepted(s: &Server, token: &str, sub: &str) {
    let mut ws = bearer(&s.url("/echo"), token).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["sub"], sub);
}

fn hs_config(extra: &str) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = ["HS256"]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 30
{extra}
[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

#[tokio::test]
async fn hs256_claims_and_expiry_leeway() {
    install_crypto();
    let s = Server::start(&hs_config("")).await;
    let url = s.url("/echo");
    let n = now();
    accepted(&s, &hs256(&json!({"sub":"a","exp":n+60})), "a").await;
    // Expired 10 s ago: within the 30 s leeway. Expired 100 s ago: beyond it.
    accepted(&s, &hs256(&json!({"sub":"a","exp":n-10})), "a").await;
    assert_invalid(&url, &hs256(&json!({"sub":"a","exp":n-100}))).await;
    // nbf in the future (beyond leeway).
    assert_invalid(&url, &hs256(&json!({"sub":"a","exp":n+60,"nbf":n+600}))).await;
    // exp is required by default.
    assert_invalid(&url, &hs256(&json!({"sub":"a"}))).await;
    // sub is required.
    assert_invalid(&url, &hs256(&json!({"exp":n+60}))).await;
    // The welcome carries exp itself, not exp + leeway.
    let mut ws = bearer(&url, &hs256(&json!({"sub":"a","exp":n+60}))).await;
    assert_eq!(next_json(&mut ws).await["expires_at"], n + 60);
}

#[tokio::test]
async fn require_exp_false_accepts_tokens_without_exp() {
    install_crypto();
    let s = Server::start(&hs_config("require_exp = false")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"forever"}))).await;
    let w = next_json(&mut ws).await;
    assert_eq!(w["sub"], "forever");
    assert!(w["expires_at"].is_null());
}

#[tokio::test]
async fn issuer_and_audience_are_enforced() {
    install_crypto();
    let s = Server::start(&hs_config(
        "issuer = \"https://issuer.example\"\naudience = \"wsgate\"",
    ))
    .await;
    let url = s.url("/echo");
    let n = now() + 60;
    accepted(
        &s,
        &hs256(&json!({"sub":"a","exp":n,"iss":"https://issuer.example","aud":"wsgate"})),
        "a",
    )
    .await;
    accepted(
        &s,
        &hs256(&json!({"sub":"a","exp":n,"iss":"https://issuer.example","aud":["x","wsgate"]})),
        "a",
    )
    .await;
    assert_invalid(
        &url,
        &hs256(&json!({"sub":"a","exp":n,"iss":"https://evil.example","aud":"wsgate"})),
    )
    .await;
    assert_invalid(
        &url,
        &hs256(&json!({"sub":"a","exp":n,"iss":"https://issuer.example","aud":"other"})),
    )
    .await;
    assert_invalid(&url, &hs256(&json!({"sub":"a","exp":n,"aud":"wsgate"}))).await;
    assert_invalid(
        &url,
        &hs256(&json!({"sub":"a","exp":n,"iss":"https://issuer.example"})),
    )
    .await;
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    install_crypto();
    let s = Server::start(&hs_config("")).await;
    let url = s.url("/echo");
    let good = hs256(&claims("victim"));
    let parts: Vec<&str> = good.split('.').collect();

    // alg: none, with and without a signature.
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert_invalid(&url, &format!("{none_header}.{}.", parts[1])).await;
    assert_invalid(&url, &format!("{none_header}.{}.{}", parts[1], parts[2])).await;
    // Signed with another secret.
    assert_invalid(
        &url,
        &jwt(
            HS256,
            Key::Secret("another-secret"),
            None,
            &claims("victim"),
        ),
    )
    .await;
    // Tampered payload, original signature.
    let evil = B64.encode(json!({"sub":"admin","exp":now()+3600}).to_string());
    assert_invalid(&url, &format!("{}.{evil}.{}", parts[0], parts[2])).await;
    // An algorithm that is not allowed (HS512 with the right secret).
    assert_invalid(
        &url,
        &jwt(HS512, Key::Secret(SECRET), None, &claims("victim")),
    )
    .await;
    // Malformed shapes.
    for bad in ["a.b.c", "....", "eyJ.eyJ.", "not a token", "a.b"] {
        assert_invalid(&url, bad).await;
    }
    // Oversized: refused unparsed, with a clean 401 (or 431 when past the HTTP limit).
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]);
    assert_invalid(&url, &huge).await;
    let r = refused(
        &url,
        &[(
            "authorization",
            &format!("Bearer {}", "A".repeat(1_000_000)),
        )],
    )
    .await;
    assert!([401, 431].contains(&r.status), "{}", r.status);
}

fn pem_config(algs: &str, file: &str) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = [{algs}]
public_key_file = "{}"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
        fixture(file).display()
    )
}

#[tokio::test]
async fn public_key_files_for_each_family() {
    install_crypto();
    for (alg, key, file) in [
        (RS256, Key::Rsa, "rsa_public.pem"),
        (PS256, Key::Rsa, "rsa_public.pem"),
        (ES256, Key::Ec, "ec_public.pem"),
        (EdDSA, Key::Ed, "ed_public.pem"),
    ] {
        let s = Server::start(&pem_config(&format!("\"{alg:?}\""), file)).await;
        accepted(&s, &jwt(alg, key, None, &claims("pk")), "pk").await;
    }
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    install_crypto();
    // An RS256 server holding an RSA public key; the attacker signs HS256 with that public
    // key's PEM bytes as the HMAC secret.
    let s = Server::start(&pem_config("\"RS256\"", "rsa_public.pem")).await;
    let url = s.url("/echo");
    let public_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(HS256),
        &claims("admin"),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_invalid(&url, &forged).await;
    // Even if HS256 is (wrongly) listed next to RS256, the RSA key only verifies RSA.
    let s = Server::start(&pem_config("\"RS256\", \"HS256\"", "rsa_public.pem")).await;
    assert_invalid(&s.url("/echo"), &forged).await;
    accepted(&s, &jwt(RS256, Key::Rsa, None, &claims("ok")), "ok").await;
}

fn jwks_config(algs: &str, line: &str) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = [{algs}]
{line}
[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

#[tokio::test]
async fn jwks_file_selects_keys_by_kid() {
    install_crypto();
    let line = format!("jwks_file = \"{}\"", fixture("jwks.json").display());
    let s = Server::start(&jwks_config(
        "\"RS256\", \"ES256\", \"EdDSA\", \"HS256\"",
        &line,
    ))
    .await;
    let url = s.url("/echo");
    accepted(&s, &jwt(RS256, Key::Rsa, Some("rsa-1"), &claims("r")), "r").await;
    accepted(&s, &jwt(ES256, Key::Ec, Some("ec-1"), &claims("e")), "e").await;
    accepted(&s, &jwt(EdDSA, Key::Ed, Some("ed-1"), &claims("d")), "d").await;
    // Unknown kid.
    assert_invalid(&url, &jwt(RS256, Key::Rsa, Some("nope"), &claims("r"))).await;
    // A kid whose key has another algorithm.
    assert_invalid(&url, &jwt(ES256, Key::Ec, Some("rsa-1"), &claims("r"))).await;
    // The JWKS's `oct` key is never used as an HMAC secret.
    assert_invalid(
        &url,
        &jwt(
            HS256,
            Key::Secret("attacker-chosen-secret"),
            Some("hmac-1"),
            &claims("r"),
        ),
    )
    .await;
}

#[tokio::test]
async fn jwks_url_is_fetched_and_refetched_on_unknown_kid_at_most_once_per_10s() {
    install_crypto();
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = http_backend(Router::new().route(
        "/jwks",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = jwks.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    ))
    .await;
    let line = format!("jwks_url = \"http://{addr}/jwks\"");
    let s = Server::start(&jwks_config("\"RS256\", \"ES256\"", &line)).await;
    let url = s.url("/echo");
    accepted(&s, &jwt(ES256, Key::Ec, Some("ec-1"), &claims("u")), "u").await;
    let at_start = hits.load(Ordering::SeqCst);
    assert_eq!(at_start, 1, "fetched once at start");
    // A burst of unknown kids costs at most one refetch.
    for i in 0..20 {
        assert_invalid(
            &url,
            &jwt(RS256, Key::Rsa, Some(&format!("spray-{i}")), &claims("u")),
        )
        .await;
    }
    assert!(
        hits.load(Ordering::SeqCst) <= at_start + 1,
        "{} fetches",
        hits.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn auth_backend_decides_over_http() {
    install_crypto();
    let backend = Router::new()
        .route(
            "/auth",
            axum::routing::post(
                |axum::Json(ask): axum::Json<serde_json::Value>| async move {
                    assert_eq!(ask["source"], "bearer");
                    assert!(ask["remote_addr"].is_string());
                    match ask["token"].as_str() {
                        Some("session-abc") => (
                            axum::http::StatusCode::OK,
                            axum::Json(
                                json!({"sub":"from-backend","expires_at":null,"channels":["x"]}),
                            ),
                        ),
                        _ => (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({}))),
                    }
                },
            ),
        )
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                "too late"
            }),
        );
    let addr = http_backend(backend).await;
    let cfg = |path: &str| {
        format!(
            "[auth]\nproxy_url = \"http://{addr}{path}\"\nproxy_timeout_ms = 300\n[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\n"
        )
    };
    let s = Server::start(&cfg("/auth")).await;
    accepted(&s, "session-abc", "from-backend").await;
    assert_invalid(&s.url("/echo"), "session-xyz").await;
    assert!(
        !s.logs_once("connection refused", 1)
            .await
            .contains("session-abc")
    );

    let slow = Server::start(&cfg("/slow")).await;
    let r = refused(
        &slow.url("/echo"),
        &[("authorization", "Bearer session-abc")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "auth_unavailable");
}

#[test]
fn algorithms_compile_list() {
    // Every algorithm the spec names is one the backend supports.
    let names = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ];
    for n in names {
        assert!(n.parse::<Algorithm>().is_ok(), "{n}");
    }
    assert!("none".parse::<Algorithm>().is_err());
}
