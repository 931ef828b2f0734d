//! How the CLI trusts a server's certificate: the system roots, a saved certificate used as the
//! only root, a pinned SHA-256 fingerprint, or (named as the danger it is) nothing at all.
//! Handshake signatures are always checked with the ring provider's algorithms, so a pinned or
//! accepted certificate still has to be held by the server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::state::Trust;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, lower-case hex.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

/// `AB:CD:...`, the way browsers and `openssl x509 -fingerprint` show a fingerprint.
pub fn fingerprint_display(hex_fingerprint: &str) -> String {
    hex_fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts `ab:cd:...` or `ABCD...` (64 hex digits), returns lower-case hex without colons.
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(crate::ui::usage(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )));
    }
    Ok(hex)
}

/// The certificates of a PEM text.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(anyhow!("no PEM certificate in it"));
    }
    Ok(certs)
}

/// A PEM text for a DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The verifier for a way of trusting.
pub fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>> {
    let provider = provider();
    Ok(match trust {
        Trust::System => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(anyhow!("no certificate authorities found on this system"))
                    .context("trusting the server's certificate");
            }
            webpki(roots, provider)?
        }
        Trust::Certificate { pem } => {
            let mut roots = RootCertStore::empty();
            for cert in parse_pem_certs(pem).context("the saved trusted certificate")? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("the saved trusted certificate: {e}"))?;
            }
            webpki(roots, provider)?
        }
        Trust::Fingerprint { sha256, .. } => Arc::new(Pinned {
            sha256: Some(sha256.clone()),
            algorithms: provider.signature_verification_algorithms,
        }),
        // `--insecure-skip-tls-verify`: any certificate. The handshake signature is still
        // checked, which only proves the server holds the key of the certificate it sent,
        // whoever it is.
        Trust::InsecureSkipVerify => Arc::new(Pinned {
            sha256: None,
            algorithms: provider.signature_verification_algorithms,
        }),
    })
}

fn webpki(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| anyhow!("building the certificate verifier: {e}"))?;
    Ok(verifier)
}

/// A rustls client configuration for a way of trusting, speaking HTTP/2 or HTTP/1.1.
pub fn client_config(trust: &Trust) -> Result<ClientConfig> {
    config_with(verifier(trust)?)
}

fn config_with(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Trusts exactly one certificate, by its SHA-256 fingerprint; with none, any certificate
/// (`--insecure-skip-tls-verify`). Handshake signatures are checked either way.
#[derive(Debug)]
struct Pinned {
    sha256: Option<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.sha256 {
            Some(expected) if fingerprint(end_entity) != *expected => Err(
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(FingerprintMismatch {
                        expected: expected.clone(),
                        got: fingerprint(end_entity),
                    })),
                )),
            ),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct FingerprintMismatch {
    expected: String,
    got: String,
}

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate has SHA-256 fingerprint {}, not the trusted {}",
            fingerprint_display(&self.got),
            fingerprint_display(&self.expected)
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Wraps a verifier: lets every handshake finish, and records the certificate chain and what the
/// inner verifier said of it. Used only to look at a server's certificate before trusting it;
/// nothing is sent over such a connection.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<Seen>>,
}

#[derive(Debug, Clone)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    verdict: Result<(), rustls::Error>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen { chain, verdict });
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a server showed in a TLS handshake.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The end-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether the given way of trusting accepts it, and if not, why.
    pub verdict: Result<(), rustls::Error>,
}

/// Connects to `host:port`, completes a TLS handshake and reports the certificate and whether
/// `trust` accepts it.
pub async fn probe(host: &str, port: u16, trust: &Trust) -> Result<Probe> {
    let recording = Arc::new(Recording {
        inner: verifier(trust)?,
        seen: Mutex::new(None),
    });
    let config = config_with(recording.clone())?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| anyhow!("{host:?} is not a host name: {e}"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}:{port}"))
    };
    let _stream = tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .map_err(|_| anyhow!("connecting to {host}:{port}: no answer within 15 s"))??;
    let seen = recording
        .seen
        .lock()
        .map_err(|_| anyhow!("certificate recorder poisoned"))?
        .clone()
        .ok_or_else(|| anyhow!("{host}:{port} sent no certificate"))?;
    Ok(Probe {
        chain: seen.chain,
        verdict: seen.verdict,
    })
}

/// Why a certificate was not accepted, in words for the person deciding whether to trust it.
pub fn untrusted_reason(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(error) = error else {
        return error.to_string();
    };
    match error {
        C::UnknownIssuer => "it is signed by an unknown certificate authority".to_owned(),
        C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not issued for this server's name".to_owned()
        }
        C::BadSignature => "its signature does not verify".to_owned(),
        C::Revoked => "it has been revoked".to_owned(),
        C::Other(other) => other.to_string(),
        other => format!("{other:?}"),
    }
}

/// A certificate described for a person deciding whether to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub names: Vec<String>,
    pub sha256: String,
}

pub fn describe(der: &[u8]) -> Result<Description> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("the server's certificate does not parse: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp())
            .map_or_else(|_| t.to_string(), |ts| ts.to_string())
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => names.push((*n).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(Description {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        names,
        sha256: fingerprint(der),
    })
}

impl std::fmt::Display for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = if self.subject.is_empty() {
            "(empty)"
        } else {
            &self.subject
        };
        writeln!(f, "  Subject:     {subject}")?;
        if !self.names.is_empty() {
            writeln!(f, "  Names:       {}", self.names.join(", "))?;
        }
        writeln!(f, "  Issuer:      {}", self.issuer)?;
        writeln!(f, "  Valid from:  {}", self.not_before)?;
        writeln!(f, "  Valid until: {}", self.not_after)?;
        write!(f, "  SHA-256:     {}", fingerprint_display(&self.sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_words() {
        let invalid = |e| rustls::Error::InvalidCertificate(e);
        assert_eq!(
            untrusted_reason(&invalid(rustls::CertificateError::UnknownIssuer)),
            "it is signed by an unknown certificate authority"
        );
        assert_eq!(
            untrusted_reason(&invalid(rustls::CertificateError::Expired)),
            "it has expired"
        );
        let mismatch = invalid(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(FingerprintMismatch {
                expected: "ab".repeat(32),
                got: "cd".repeat(32),
            }),
        )));
        assert!(
            untrusted_reason(&mismatch).starts_with("the server's certificate has SHA-256"),
            "{}",
            untrusted_reason(&mismatch)
        );
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).expect("plain"), hex);
        let colons = fingerprint_display(&hex);
        assert!(colons.starts_with("AB:AB:"));
        assert_eq!(parse_fingerprint(&colons).expect("colons"), hex);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_pin_accepts_only_its_certificate_and_insecure_mode_any() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let name = ServerName::try_from("localhost").expect("name");
        let check = |trust: &Trust, der: &CertificateDer<'_>| {
            verifier(trust)
                .expect("verifier")
                .verify_server_cert(der, &[], &name, &[], UnixTime::now())
                .is_ok()
        };
        let pinned = Trust::Fingerprint {
            sha256: fingerprint(cert.cert.der()),
            pem: None,
        };
        assert!(check(&pinned, cert.cert.der()));
        assert!(!check(&pinned, other.cert.der()));
        assert!(check(&Trust::InsecureSkipVerify, other.cert.der()));
    }

    #[test]
    fn describes_a_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
        let der = cert.cert.der();
        let d = describe(der).expect("describe");
        assert_eq!(d.names, ["localhost", "127.0.0.1"]);
        assert_eq!(d.sha256, fingerprint(der));
        assert!(d.to_string().contains("SHA-256:"));
        let pem = to_pem(der);
        assert_eq!(
            parse_pem_certs(&pem).expect("pem")[0].as_ref(),
            der.as_ref()
        );
    }
}
