//! Hot paths of a handshake: finding the token in the request, and each verifier.
//!
//! `cargo bench -p wsgate --bench auth`. Wall-clock figures on a shared 2-core VM wobble;
//! compare runs on the same machine, not absolute numbers (see BENCHMARKS.md).

use std::hint::black_box;

use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use wsgate::verify::{JwtConfig, JwtVerifier, StaticTokens, VerifierChain, VerifyContext};
use wsgate::{Credential, SourceKind, Sources};

fn now() -> u64 {
    wsgate::verify::now_unix()
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims =
        json!({"sub":"bench-user","exp":now()+3600,"iat":now(),"jti":"j","channels":["chat:*"]});
    encode(&Header::new(alg), &claims, key).expect("sign")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../wsgate-server/tests/fixtures")
        .join(name);
    std::fs::read(path).expect("fixture")
}

fn extraction(c: &mut Criterion) {
    let t = token(Algorithm::HS256, &EncodingKey::from_secret(b"s"));
    let sources = Sources::new(SourceKind::ALL).allowed_origins(["http://app.example"]);
    let mut g = c.benchmark_group("extract");
    for (name, req) in [
        (
            "bearer",
            Request::builder()
                .uri("/echo")
                .header("authorization", format!("Bearer {t}")),
        ),
        (
            "query",
            Request::builder().uri(format!("/echo?x=1&token={t}")),
        ),
        (
            "subprotocol",
            Request::builder().uri("/echo").header(
                "sec-websocket-protocol",
                format!("wsgate.v1, wsgate.bearer.{t}"),
            ),
        ),
        (
            "cookie",
            Request::builder()
                .uri("/echo")
                .header("cookie", format!("a=b; wsgate_session={t}"))
                .header("origin", "http://app.example"),
        ),
        ("none", Request::builder().uri("/echo")),
    ] {
        let parts = req.body(()).expect("request").into_parts().0;
        g.bench_function(name, |b| {
            b.iter(|| {
                sources.check_origin(&parts.headers).ok();
                black_box(sources.find(black_box(&parts)).ok())
            })
        });
    }
    g.finish();
}

fn verifiers(c: &mut Criterion) {
    wsgate::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let ctx = VerifyContext::default();
    let cfg = |alg| JwtConfig {
        algorithms: vec![alg],
        ..JwtConfig::default()
    };

    let hs = VerifierChain::new().with(
        JwtVerifier::new(cfg(Algorithm::HS256))
            .unwrap()
            .with_secret(b"s")
            .unwrap(),
    );
    let hs_token = token(Algorithm::HS256, &EncodingKey::from_secret(b"s"));
    let rs = VerifierChain::new().with(
        JwtVerifier::new(cfg(Algorithm::RS256))
            .unwrap()
            .with_public_key_pem(&fixture("rsa_public.pem"))
            .unwrap(),
    );
    let rs_token = token(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
    );
    let es = VerifierChain::new().with(
        JwtVerifier::new(cfg(Algorithm::ES256))
            .unwrap()
            .with_public_key_pem(&fixture("ec_public.pem"))
            .unwrap(),
    );
    let es_token = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap(),
    );
    let ed = VerifierChain::new().with(
        JwtVerifier::new(cfg(Algorithm::EdDSA))
            .unwrap()
            .with_public_key_pem(&fixture("ed_public.pem"))
            .unwrap(),
    );
    let ed_token = token(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(&fixture("ed_private.pem")).unwrap(),
    );
    let tokens: Vec<(String, String)> = (0..100)
        .map(|i| (format!("static-token-{i:03}"), format!("user-{i}")))
        .collect();
    let st = VerifierChain::new().with(StaticTokens::new(
        tokens.iter().map(|(t, s)| (t.as_str(), s.clone())),
    ));
    let bad_sig = token(Algorithm::HS256, &EncodingKey::from_secret(b"other"));

    let mut g = c.benchmark_group("verify");
    for (name, chain, tok) in [
        ("jwt_hs256", &hs, hs_token.as_str()),
        ("jwt_hs256_bad_signature", &hs, bad_sig.as_str()),
        ("jwt_rs256", &rs, rs_token.as_str()),
        ("jwt_es256", &es, es_token.as_str()),
        ("jwt_eddsa", &ed, ed_token.as_str()),
        ("static_100_tokens", &st, "static-token-050"),
    ] {
        let cred = Credential::new(tok, SourceKind::Bearer);
        g.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(chain.verify(black_box(&cred), &ctx)).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(benches, extraction, verifiers);
criterion_main!(benches);
