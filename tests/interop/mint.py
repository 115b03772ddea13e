"""Tokens minted by an independent JOSE implementation (PyPI `joserfc`), for wsgate's interop
test: one key per algorithm wsgate accepts (the RS256 one published with an `x5c`
certificate chain, as some IdPs do), a valid token for each, and a tampered copy of each.
Prints {"keys": [...], "tokens": [{name, token, valid}]}."""
import base64
import datetime
import json
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

ALGS = {
    "RS256": lambda: RSAKey.generate_key(2048),
    "RS384": lambda: RSAKey.generate_key(2048),
    "RS512": lambda: RSAKey.generate_key(2048),
    "PS256": lambda: RSAKey.generate_key(2048),
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
}


def x5c(key):
    """A self-signed certificate for the key, as a JWK's x5c chain."""
    private = serialization.load_pem_private_key(key.as_pem(private=True), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "joserfc interop")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


keys, tokens = [], []
for alg, generate in ALGS.items():
    key = generate()
    kid = f"joserfc-{alg}"
    public = key.as_dict(private=False)
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    if alg == "RS256":
        public["x5c"] = x5c(key)
    keys.append(public)
    name = f"joserfc-{alg}"
    now = int(time.time())
    claims = {"sub": name, "iat": now, "exp": now + 600, "channels": ["interop"]}
    token = jwt.encode({"alg": alg, "kid": kid}, claims, key, algorithms=[alg])
    tokens.append({"name": name, "token": token, "valid": True})
    head, _, sig = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "exp": now + 600}).encode()).rstrip(b"=").decode()
    tokens.append({"name": f"{name}-tampered", "token": f"{head}.{forged}.{sig}", "valid": False})

print(json.dumps({"keys": keys, "tokens": tokens}))
