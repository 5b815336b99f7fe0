//! TLS between a seednode and its PostgreSQL ([`PgTls`], config key `tls` of
//! `[seednode.postgres]`), on rustls.
//!
//! | `tls`         | TLS                        | server certificate                                |
//! |---------------|----------------------------|---------------------------------------------------|
//! | `disable`     | never                      | -                                                 |
//! | `prefer`      | when the server offers it  | not checked                                       |
//! | `require`     | always, or no connection   | not checked                                       |
//! | `verify-full` | always, or no connection   | chains to `ca_file` and names the url's host      |
//!
//! `prefer` is the default, as in libpq: it keeps the database traffic (join requests, tokens)
//! from passive listeners wherever the server has TLS on, and still reaches a server without
//! it. `prefer` and `require` do not authenticate the server, so an active attacker on the path
//! can pose as it; `verify-full` is the setting for any network that is not trusted. Unix
//! sockets never carry TLS (PostgreSQL does not offer it there), so `require` and
//! `verify-full` need a TCP host.
//!
//! Even unchecked, a certificate's handshake signature is verified (the server holds the
//! certificate's key); only the chain to a trusted root and the name are skipped.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Whether and how a seednode's connections to PostgreSQL use TLS (see the
/// [module documentation](self)).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PgTls {
    /// Never.
    Disable,
    /// When the server offers it, without checking its certificate. The default.
    #[default]
    Prefer,
    /// Always, without checking the server's certificate.
    Require,
    /// Always, with the server's certificate checked against `ca_file` and the url's host.
    VerifyFull,
}

impl PgTls {
    /// The name in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }

    /// tokio-postgres's mode for it.
    pub(crate) fn ssl_mode(self) -> SslMode {
        match self {
            Self::Disable => SslMode::Disable,
            Self::Prefer => SslMode::Prefer,
            Self::Require | Self::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS connector for `tls`, trusting the PEM certificates in `ca_file` for `verify-full`.
/// Errors name the file and what is wrong with it, never its contents.
pub(crate) fn connector(tls: PgTls, ca_file: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let config = match (tls, ca_file) {
        (PgTls::VerifyFull, Some(path)) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        (PgTls::VerifyFull, None) => {
            return Err("tls = \"verify-full\" needs ca_file".to_owned());
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file, as trust roots.
fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read ca_file {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {shown} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ca_file {shown} holds no certificate"));
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, rejected) = roots.add_parsable_certificates(certs);
    if rejected > 0 || roots.is_empty() {
        return Err(format!(
            "ca_file {shown} holds {rejected} certificate(s) that cannot be trust roots"
        ));
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate, but a handshake signed by its key.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_config_text() {
        for tls in [
            PgTls::Disable,
            PgTls::Prefer,
            PgTls::Require,
            PgTls::VerifyFull,
        ] {
            let text = format!("tls = \"{}\"", tls.as_str());
            #[derive(serde::Deserialize)]
            struct T {
                tls: PgTls,
            }
            let parsed: T = toml_parse(&text);
            assert_eq!(parsed.tls, tls);
        }
        assert_eq!(PgTls::default(), PgTls::Prefer);
    }

    fn toml_parse<T: serde::de::DeserializeOwned>(text: &str) -> T {
        cordon_host::config::parse_toml(Path::new("test.toml"), text).unwrap()
    }

    #[test]
    fn verify_full_needs_a_readable_pem_ca_file() {
        assert!(
            connector(PgTls::VerifyFull, None)
                .err()
                .unwrap()
                .contains("needs ca_file")
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = connector(PgTls::VerifyFull, Some(&missing)).err().unwrap();
        assert!(e.contains("cannot read ca_file"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = connector(PgTls::VerifyFull, Some(&garbage)).err().unwrap();
        assert!(e.contains("holds no certificate"), "{e}");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert!(connector(PgTls::VerifyFull, Some(&good)).is_ok());
        assert!(connector(PgTls::Prefer, None).is_ok());
    }
}
