//! The run's certificates, made at start: one CA, and one server certificate for `localhost`
//! and `127.0.0.1` that both the upstream and the proxy present (the client and the proxy trust
//! the CA). The same shape as `tests/src/certs.rs`, cut to what a benchmark needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process's crypto provider (an error only says one is installed).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA and the server certificate of a run, as files in its directory.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    /// The server certificate (PEM file).
    pub cert: PathBuf,
    /// The server certificate's key (PEM file).
    pub key: PathBuf,
}

impl Pki {
    /// Makes a CA and a `localhost`/`127.0.0.1` server certificate and writes them into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "infra load-test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("signing the CA certificate")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .context("server names")?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;

        let pki = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        write(&pki.ca, &ca_cert.pem())?;
        write(&pki.cert, &cert.pem())?;
        write(&pki.key, &key.serialize_pem())?;
        Ok(pki)
    }

    /// A client configuration that trusts the CA and offers exactly `alpn`.
    pub fn client_config(&self, alpn: &[u8]) -> Result<Arc<ClientConfig>> {
        init_crypto();
        let mut roots = RootCertStore::empty();
        for cert in certificates(&self.ca)? {
            roots
                .add(cert)
                .with_context(|| format!("trusting {}", self.ca.display()))?;
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A server configuration presenting `cert`/`key`, with ALPN `h2` and `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    init_crypto();
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates(cert)?, key)
        .context("the server key does not match its certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
