//! The TLS listener's configuration: certificates from PEM files, re-read when they change on
//! disk (cert-manager rotates them), or a self-signed one for localhost when none is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// ALPN protocols the listener offers, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, watched for changes.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate for `localhost`, made at start.
    SelfSigned,
}

/// The current certificate, swapped atomically on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    source: CertSource,
    /// Modification times of the files when last loaded.
    loaded: std::sync::Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertResolver {
    /// Loads the certificate, failing on anything unreadable or mismatched.
    pub fn new(source: CertSource) -> Result<Arc<Self>> {
        let (key, mtimes) = match &source {
            CertSource::Files { cert, key } => (load_files(cert, key)?, Some(mtimes(cert, key)?)),
            CertSource::SelfSigned => (self_signed()?, None),
        };
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(key),
            source,
            loaded: std::sync::Mutex::new(mtimes),
        }))
    }

    /// The SHA-256 fingerprint of the leaf certificate, as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        let key = self.current.load();
        key.cert.first().map(|c| fingerprint(c)).unwrap_or_default()
    }

    /// The leaf certificate in PEM, for clients that must trust a self-signed one.
    pub fn leaf_pem(&self) -> String {
        let key = self.current.load();
        key.cert.first().map(|c| pem_encode(c)).unwrap_or_default()
    }

    /// Re-reads the files if they changed. A bad new pair is logged and the old one stays.
    /// Returns whether a new certificate is now served.
    pub fn reload_if_changed(&self) -> bool {
        let CertSource::Files { cert, key } = &self.source else {
            return false;
        };
        let Ok(now) = mtimes(cert, key) else {
            return false;
        };
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.as_ref() == Some(&now) {
            return false;
        }
        match load_files(cert, key) {
            Ok(new) => {
                self.current.store(Arc::new(new));
                *loaded = Some(now);
                tracing::info!(cert = %cert.display(), fingerprint = %self.fingerprint(), "serving certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(cert = %cert.display(), error = format!("{error:#}"), "certificate changed on disk but cannot be loaded; keeping the previous one");
                false
            }
        }
    }

    /// Polls the files for changes every `every` until the process ends. Polling (rather than
    /// inotify) survives the symlink swaps Kubernetes uses for mounted Secrets.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        if matches!(self.source, CertSource::SelfSigned) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reload_if_changed();
            }
        });
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn mtimes(cert: &Path, key: &Path) -> Result<(SystemTime, SystemTime)> {
    let m = |p: &Path| -> Result<SystemTime> {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading {}", p.display()))
    };
    Ok((m(cert)?, m(key)?))
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    certified(chain, key_der).with_context(|| {
        format!(
            "certificate {} and key {} do not make a serving pair",
            cert.display(),
            key.display()
        )
    })
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .context("unsupported private key")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("the private key does not belong to the certificate")?;
    Ok(certified)
}

fn self_signed() -> Result<CertifiedKey> {
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .context("generating a self-signed certificate")?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("self-signed key: {e}"))?;
    certified(vec![generated.cert.der().clone()], key)
}

/// Makes a self-signed certificate for `localhost` at `cert` and `key` (mode 0600) unless both
/// exist, so that a start without a certificate keeps the same one from start to start (and
/// clients that trusted it keep trusting it). Answers whether it made them.
pub fn keep_self_signed(cert: &Path, key: &Path) -> Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .context("generating a self-signed certificate")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("writing {}", key.display()))?;
    file.write_all(generated.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(true)
}

/// The SHA-256 fingerprint of a DER certificate, as upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_self_signed_certificate_is_made_once() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        assert!(keep_self_signed(&cert, &key).expect("made"));
        let first = CertResolver::new(CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("loads")
        .fingerprint();
        assert!(!keep_self_signed(&cert, &key).expect("kept"));
        let second = CertResolver::new(CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("loads")
        .fingerprint();
        assert_eq!(first, second);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn self_signed_has_a_fingerprint() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = CertResolver::new(CertSource::SelfSigned).expect("self-signed");
        let fp = resolver.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        assert!(
            resolver
                .leaf_pem()
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
    }

    #[test]
    fn a_broken_rotation_keeps_the_old_certificate() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("infra-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, generated.cert.pem()).expect("write cert");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
        let resolver = CertResolver::new(CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("load");
        let before = resolver.fingerprint();

        // A torn write: the certificate is garbage for a moment.
        std::fs::write(&cert, "not a certificate").expect("write");
        bump_mtime(&cert);
        assert!(!resolver.reload_if_changed());
        assert_eq!(resolver.fingerprint(), before);

        // The rotation completes.
        let next = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, next.cert.pem()).expect("write cert");
        std::fs::write(&key, next.signing_key.serialize_pem()).expect("write key");
        bump_mtime(&cert);
        bump_mtime(&key);
        assert!(resolver.reload_if_changed());
        assert_ne!(resolver.fingerprint(), before);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn bump_mtime(path: &Path) {
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        let later = SystemTime::now() + Duration::from_secs(rand_secs());
        file.set_modified(later).expect("set mtime");
    }

    fn rand_secs() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(10);
        N.fetch_add(10, Ordering::SeqCst)
    }
}
