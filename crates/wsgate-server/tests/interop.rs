//! Tokens minted by JOSE implementations that are not ours — npm `jose` and PyPI `joserfc`
//! (`tests/interop/`, installed by scripts/test) — in every algorithm wsgate accepts (RS256,
//! RS384, RS512, PS256, ES256, ES384, EdDSA), keys with and without `kid`, an `x5c`-bearing
//! key: each verifies through the binary, and each tampered copy (payload changed, signature
//! kept) is refused.

mod common;

use common::*;
use serde_json::{Value, json};

fn mint(program: &str, script: &str) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    let out = std::process::Command::new(program)
        .arg(dir.join(script))
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} {script}: {e} (scripts/test installs tests/interop)")
        });
    assert!(
        out.status.success(),
        "{program} {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the minted keys and tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_other_jose_implementations_verify_and_tampered_ones_do_not() {
    let minted = [mint("node", "mint.mjs"), mint("python3", "mint.py")];
    let keys: Vec<Value> = minted
        .iter()
        .flat_map(|m| m["keys"].as_array().unwrap().clone())
        .collect();
    assert!(
        keys.iter().any(|k| k.get("x5c").is_some()) && keys.iter().any(|k| k.get("kid").is_none()),
        "the set has an x5c key and keys without kid"
    );
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("interop-jwks.json");
    std::fs::write(&jwks, json!({ "keys": keys }).to_string()).unwrap();
    let s = Server::start(&format!(
        r#"
[auth.jwt]
algorithms = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
jwks_file = "{}"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
        jwks.display()
    ))
    .await;
    let mut checked = 0;
    for t in minted
        .iter()
        .flat_map(|m| m["tokens"].as_array().unwrap().clone())
    {
        let (name, token) = (t["name"].as_str().unwrap(), t["token"].as_str().unwrap());
        if t["valid"] == true {
            let mut ws = bearer(&s.url("/echo"), token).await;
            assert_eq!(next_json(&mut ws).await["sub"], name, "{name}");
        } else {
            assert_invalid(&s.url("/echo"), token).await;
        }
        checked += 1;
    }
    assert_eq!(
        checked,
        2 * (9 + 7),
        "every algorithm, both libraries, valid and tampered"
    );
}
