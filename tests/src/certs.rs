//! Test PKI, generated at test time: a CA, server certificates for `localhost` and `127.0.0.1`,
//! client certificates in the Kubernetes style (CN = user, O = groups), and the rustls
//! configurations built from them.
//!
//! Every certificate is available both as PEM text (for files and kubeconfigs) and as rustls
//! types (for in-process servers and clients). Keys are ECDSA P-256.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs the ring crypto provider as the process default. Safe to call any number of times,
/// from any number of tests: a provider that is already installed is left alone.
pub fn init_crypto() {
    // An error only says that a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA whose subject CN is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let cert = params.self_signed(&key).expect("CA parameters are valid");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A root store that trusts this CA and nothing else.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("a certificate rcgen made parses");
        roots
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn localhost_cert(&self) -> IssuedCert {
        self.server_cert(&["localhost", "127.0.0.1"])
    }

    /// A server certificate for the given DNS names and IP addresses (subject alternative names).
    pub fn server_cert(&self, names: &[&str]) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params =
            CertificateParams::new(names.clone()).expect("test server names are valid SANs");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("server", String::as_str),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        self.issue(&params)
    }

    /// A client certificate the way Kubernetes reads one: the common name is the user name and
    /// each organization is a group.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> IssuedCert {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf parameters are valid");
        // rcgen keeps one value per attribute type, and a user in several groups needs several
        // O attributes: write the subject ourselves and sign the certificate again.
        let der = self
            .with_subject(cert.der(), &der::name(user, groups))
            .expect("rcgen writes a certificate this DER walk reads");
        IssuedCert {
            cert_pem: pem_certificate(&der),
            key_pem: key.serialize_pem(),
        }
    }

    /// `cert` with its subject replaced by `subject` (a DER `Name`), signed again by this CA.
    fn with_subject(&self, cert: &[u8], subject: &[u8]) -> Option<Vec<u8>> {
        use rcgen::SigningKey as _;

        let (certificate, _) = der::expect(cert, der::SEQUENCE)?;
        let (tbs, after_tbs) = der::expect(certificate, der::SEQUENCE)?;
        let (algorithm, _) = der::split_element(after_tbs)?;

        let mut rest = tbs;
        let mut before_subject = Vec::new();
        if rest.first() == Some(&0xa0) {
            let (element, after) = der::split_element(rest)?;
            before_subject.extend_from_slice(element);
            rest = after;
        }
        // serialNumber, signature, issuer, validity
        for _ in 0..4 {
            let (element, after) = der::split_element(rest)?;
            before_subject.extend_from_slice(element);
            rest = after;
        }
        let (_, after_subject) = der::split_element(rest)?;

        let mut tbs = before_subject;
        tbs.extend_from_slice(subject);
        tbs.extend_from_slice(after_subject);
        let tbs = der::wrap(der::SEQUENCE, &tbs);
        let signature = self.issuer.key().sign(&tbs).ok()?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(&signature);

        let mut body = tbs;
        body.extend_from_slice(algorithm);
        body.extend_from_slice(&der::wrap(der::BIT_STRING, &bits));
        Some(der::wrap(der::SEQUENCE, &body))
    }

    fn issue(&self, params: &CertificateParams) -> IssuedCert {
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf parameters are valid");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate and its private key, PEM. Cloning copies the PEM text.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM (one `CERTIFICATE` block; the CA is not included).
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of test output.
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate chain (just the leaf) as rustls wants it.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("rcgen writes valid PEM")
    }

    /// The private key as rustls wants it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("rcgen writes valid PEM")
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir` and returns their paths, for programs
    /// that take file names.
    pub fn write_to(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("the test directory is writable");
        std::fs::write(&key, &self.key_pem).expect("the test directory is writable");
        (cert, key)
    }
}

/// A rustls server configuration presenting `cert`, with ALPN `h2` and `http/1.1`.
/// With `client_ca`, client certificates signed by that CA are verified; a client without a
/// certificate is still let in (the server decides what an anonymous caller may do).
pub fn server_config(cert: &IssuedCert, client_ca: Option<&Ca>) -> ServerConfig {
    init_crypto();
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(ca.root_store()))
                .allow_unauthenticated()
                .build()
                .expect("a root store with one CA makes a verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(cert.cert_chain(), cert.private_key())
        .expect("an rcgen key matches its certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// A rustls client configuration that trusts `ca` only, presents `client_cert` when
/// given, and offers ALPN `h2` and `http/1.1`.
pub fn client_config(ca: &Ca, client_cert: Option<&IssuedCert>) -> ClientConfig {
    init_crypto();
    let builder = ClientConfig::builder().with_root_certificates(ca.root_store());
    let mut config = match client_cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.cert_chain(), cert.private_key())
            .expect("an rcgen key matches its certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The subject of a DER certificate as Kubernetes reads it: the common name and the
/// organizations, in order. `None` when the certificate does not parse.
///
/// A small DER walk, so the helpers need no X.509 parser; it never panics on bad input.
pub fn subject_user_and_groups(cert: &[u8]) -> Option<(String, Vec<String>)> {
    let (certificate, _) = der::expect(cert, der::SEQUENCE)?;
    let (mut tbs, _) = der::expect(certificate, der::SEQUENCE)?;
    // version [0] EXPLICIT, optional
    if tbs.first() == Some(&0xa0) {
        tbs = der::next(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        tbs = der::next(tbs)?.2;
    }
    let (mut subject, _) = der::expect(tbs, der::SEQUENCE)?;

    let mut user = None;
    let mut groups = Vec::new();
    while !subject.is_empty() {
        let (mut set, rest) = der::expect(subject, der::SET)?;
        subject = rest;
        while !set.is_empty() {
            let (attribute, rest) = der::expect(set, der::SEQUENCE)?;
            set = rest;
            let (oid, value) = der::expect(attribute, der::OID)?;
            let (_, value, _) = der::next(value)?;
            let value = String::from_utf8(value.to_vec()).ok()?;
            if oid == der::OID_COMMON_NAME {
                user = Some(value);
            } else if oid == der::OID_ORGANIZATION {
                groups.push(value);
            }
        }
    }
    Some((user.unwrap_or_default(), groups))
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Just enough DER to read a certificate's subject, and to write one.
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const BIT_STRING: u8 = 0x03;
    const UTF8_STRING: u8 = 0x0c;
    pub const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    pub const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    /// `tag`, the DER length of `contents`, `contents`.
    pub fn wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if len < 0x80 {
            out.push(u8::try_from(len).expect("checked to be below 0x80"));
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | u8::try_from(bytes.len() - skip).expect("a usize has at most 8 bytes"));
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A `Name` of one CN and one O per group, each in its own RDN, as `openssl` and Kubernetes
    /// write them.
    pub fn name(common_name: &str, organizations: &[&str]) -> Vec<u8> {
        let attribute = |oid: &[u8], value: &str| {
            let mut pair = wrap(OID, oid);
            pair.extend(wrap(UTF8_STRING, value.as_bytes()));
            wrap(SET, &wrap(SEQUENCE, &pair))
        };
        let mut rdns = Vec::new();
        for organization in organizations {
            rdns.extend(attribute(OID_ORGANIZATION, organization));
        }
        rdns.extend(attribute(OID_COMMON_NAME, common_name));
        wrap(SEQUENCE, &rdns)
    }

    /// Splits the next whole element (tag, length and contents) off `input`.
    pub fn split_element(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let (_, _, rest) = next(input)?;
        Some(input.split_at(input.len() - rest.len()))
    }

    /// Splits the next element off `input`: (tag, contents, rest).
    pub fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, mut input) = input.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let octets = usize::from(first & 0x7f);
            if octets == 0 || octets > 4 || input.len() < octets {
                return None;
            }
            let (bytes, rest) = input.split_at(octets);
            input = rest;
            bytes
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b))
        };
        if input.len() < len {
            return None;
        }
        let (contents, rest) = input.split_at(len);
        Some((tag, contents, rest))
    }

    /// Like [`next`], but the element must carry `tag`.
    pub fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (found, contents, rest) = next(input)?;
        (found == tag).then_some((contents, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_subject_reads_back_as_user_and_groups() {
        let ca = Ca::new("test-ca");
        let cert = ca.client_cert("alice", &["eng", "ops"]);
        let der = cert.cert_chain().remove(0);
        assert_eq!(
            subject_user_and_groups(&der),
            Some(("alice".to_owned(), vec!["eng".to_owned(), "ops".to_owned()]))
        );
    }

    #[test]
    fn client_cert_with_groups_verifies_against_its_ca() {
        init_crypto();
        let ca = Ca::new("test-ca");
        let cert = ca.client_cert("alice", &["eng", "ops", "on-call"]);
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(ca.root_store()))
            .build()
            .expect("a verifier");
        let leaf = cert.cert_chain().remove(0);
        verifier
            .verify_client_cert(&leaf, &[], rustls_pki_types::UnixTime::now())
            .expect("the re-signed certificate verifies");
        let other = Ca::new("other-ca");
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(other.root_store()))
            .build()
            .expect("a verifier");
        assert!(
            verifier
                .verify_client_cert(&leaf, &[], rustls_pki_types::UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn subject_of_garbage_is_none() {
        assert_eq!(subject_user_and_groups(b""), None);
        assert_eq!(subject_user_and_groups(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_user_and_groups(&[0x30, 0x03, 0x30, 0x01]), None);
    }

    #[test]
    fn configs_build() {
        let ca = Ca::new("test-ca");
        let server = ca.localhost_cert();
        let client = ca.client_cert("proxy", &[]);
        let _ = server_config(&server, Some(&ca));
        let _ = server_config(&server, None);
        let _ = client_config(&ca, Some(&client));
        let _ = client_config(&ca, None);
    }
}
