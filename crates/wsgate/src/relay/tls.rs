//! TLS with a `wss://` upstream: the system's roots, or exactly the certificates of
//! `upstream_ca_file` — which may be the upstream's own self-signed certificate.
//!
//! `openssl req -x509` makes a certificate that is its own CA (`basicConstraints CA:TRUE`).
//! nginx (`proxy_ssl_trusted_certificate`) accepts such a certificate when it is listed;
//! webpki refuses a CA certificate in the end-entity position. So a certificate listed in
//! the file is also accepted *as itself* (pinned): the presented certificate must be one of
//! those listed byte for byte, within its validity and valid for the upstream's name, and the
//! handshake's signature proves the upstream holds its key. Anything else is verified as
//! webpki verifies it, against the listed certificates as roots.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::UpstreamSetupError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Trusts the system's roots. Unreadable system certificates leave an empty store: wss://
/// then fails per connection with 502 (and the log says why) instead of refusing to start.
pub(super) fn system_config() -> Result<ClientConfig, UpstreamSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Trusts exactly the certificates in `pem`: as roots, and each as itself.
pub(super) fn listed_config(pem: &[u8]) -> Result<ClientConfig, UpstreamSetupError> {
    let mut roots = RootCertStore::empty();
    let mut listed = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| UpstreamSetupError::BadCa(e.to_string()))?;
        roots
            .add(cert.clone())
            .map_err(|e| UpstreamSetupError::BadCa(e.to_string()))?;
        listed.push(cert);
    }
    if listed.is_empty() {
        return Err(UpstreamSetupError::BadCa("no CERTIFICATE block".into()));
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| UpstreamSetupError::Tls(e.to_string()))?;
    let verifier = Listed {
        webpki,
        listed,
        provider,
    };
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

fn builder()
-> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, UpstreamSetupError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamSetupError::Tls(e.to_string()))
}

/// webpki against the listed certificates, and a listed certificate accepted as itself.
#[derive(Debug)]
struct Listed {
    webpki: Arc<WebPkiServerVerifier>,
    listed: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl Listed {
    /// A listed certificate presented as the upstream's own: valid now and for `name`. A
    /// self-signed CA certificate fails webpki's end-entity rules only at its basic
    /// constraints, which are checked after its validity period: that one refusal is the
    /// sign that everything before it held.
    fn pinned(
        &self,
        cert: &CertificateDer<'_>,
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let other = |e: webpki::Error| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        };
        let ee = webpki::EndEntityCert::try_from(cert).map_err(other)?;
        let anchor = webpki::anchor_from_trusted_cert(cert).map_err(other)?;
        let algs = self.provider.signature_verification_algorithms.all;
        match ee.verify_for_usage(
            algs,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        ) {
            Ok(_) | Err(webpki::Error::CaUsedAsEndEntity) => {}
            Err(e) => return Err(other(e)),
        }
        ee.verify_is_valid_for_subject_name(name)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
    }
}

impl ServerCertVerifier for Listed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => return Ok(ok),
            Err(e) => e,
        };
        if !self
            .listed
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        self.pinned(end_entity, server_name, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
