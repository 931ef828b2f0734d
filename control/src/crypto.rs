//! Encryption at rest: AES-256-GCM under the root key.
//!
//! Provider client secrets, identity-provider refresh tokens and the private halves of token
//! signing keys are sealed with the [`RootKey`] before they reach the store. A sealed value is
//! `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`, and its associated data names the
//! row and column it belongs to, so a sealed value copied into another row does not open.
//!
//! AES-GCM comes from `ring`, the one crypto provider of the workspace (`docs/dependencies.md`), rather
//! than from the `aes-gcm` crate: same algorithm, no second implementation in the build.
//!
//! The root key is 32 random bytes, written as base64 in a file (created with mode 0600 on first
//! start when absent) or given in an environment variable.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The length of the root key in bytes.
pub const ROOT_KEY_LEN: usize = 32;

/// The format byte in front of every sealed value.
const FORMAT_V1: u8 = 1;

/// Bytes that must not be shown: `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret itself. Call only where it is used, never to log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootKeySource {
    /// A file holding the key in base64; created (mode 0600) on first start when absent.
    File(PathBuf),
    /// An environment variable holding the key in base64; never created.
    Env(String),
}

impl fmt::Display for RootKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "root key file {}", path.display()),
            Self::Env(var) => write!(f, "root key environment variable {var}"),
        }
    }
}

/// Why the root key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// Reading the key file failed.
    #[error("cannot read the root key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Creating the key file failed.
    #[error("cannot create the root key file {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not Unicode).
    #[error("the root key environment variable {0} is not set")]
    EnvMissing(String),
    /// Decoding the key failed: not base64 of exactly 32 bytes.
    #[error("the {source_name} does not hold a root key (base64 of 32 bytes): {why}")]
    Decode {
        /// Where the key came from.
        source_name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The root key. `Debug` never shows it.
#[derive(Clone)]
pub struct RootKey {
    bytes: [u8; ROOT_KEY_LEN],
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

/// A root key and whether this start created it.
#[derive(Debug)]
pub struct LoadedRootKey {
    /// The key.
    pub key: RootKey,
    /// Whether the key file did not exist and was created now.
    pub created: bool,
}

impl RootKey {
    /// A new random key.
    pub fn generate(rng: &SystemRandom) -> Result<Self, RootKeyError> {
        let mut bytes = [0u8; ROOT_KEY_LEN];
        rng.fill(&mut bytes).map_err(|_| RootKeyError::Random)?;
        Ok(Self { bytes })
    }

    /// Parses the base64 form (surrounding white space is ignored).
    fn decode(text: &str, source_name: &str) -> Result<Self, RootKeyError> {
        let decoded = STANDARD
            .decode(text.trim())
            .map_err(|e| RootKeyError::Decode {
                source_name: source_name.to_owned(),
                why: e.to_string(),
            })?;
        let bytes: [u8; ROOT_KEY_LEN] =
            decoded
                .try_into()
                .map_err(|v: Vec<u8>| RootKeyError::Decode {
                    source_name: source_name.to_owned(),
                    why: format!("it decodes to {} bytes, not {ROOT_KEY_LEN}", v.len()),
                })?;
        Ok(Self { bytes })
    }

    /// The base64 form, as written to the key file.
    fn encode(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// Whether the key is present at `source` (the file exists, or the variable is set).
    pub fn exists(source: &RootKeySource) -> bool {
        match source {
            RootKeySource::File(path) => path.symlink_metadata().is_ok(),
            RootKeySource::Env(var) => std::env::var_os(var).is_some(),
        }
    }

    /// Loads the key from `source`. A missing key file is created only when `create` is set;
    /// a missing environment variable is always an error.
    pub fn load(
        source: &RootKeySource,
        create: bool,
        rng: &SystemRandom,
    ) -> Result<LoadedRootKey, RootKeyError> {
        match source {
            RootKeySource::Env(var) => {
                let text = std::env::var(var).map_err(|_| RootKeyError::EnvMissing(var.clone()))?;
                let key = Self::decode(&text, &source.to_string())?;
                Ok(LoadedRootKey {
                    key,
                    created: false,
                })
            }
            RootKeySource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(LoadedRootKey {
                    key: Self::decode(&text, &source.to_string())?,
                    created: false,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    let key = Self::generate(rng)?;
                    key.write_new(path)?;
                    Ok(LoadedRootKey { key, created: true })
                }
                Err(source) => Err(RootKeyError::Read {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// Writes the key to a new file, mode 0600, refusing to replace one that exists.
    fn write_new(&self, path: &Path) -> Result<(), RootKeyError> {
        let create = |source| RootKeyError::Create {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        // The mode given to open is filtered by the umask; 0600 is what we want whatever it is.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(create)?;
        file.write_all(format!("{}\n", self.encode()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(create)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the new directory entry durable too; failure here is not worth refusing for.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

/// Why a sealed value could not be opened or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Sealing failed (the random number generator failed).
    #[error("cannot seal a value: the random number generator failed")]
    Seal,
    /// Opening failed: the value is damaged, belongs to another row, or was sealed under
    /// another root key.
    #[error("cannot open a sealed value: it is damaged or was sealed under another root key")]
    Open,
}

/// Seals and opens values with the root key.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(AES-256-GCM, <key redacted>)")
    }
}

impl Sealer {
    /// A sealer under `key`.
    pub fn new(key: &RootKey, rng: SystemRandom) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, &key.bytes)
            .expect("a 32-byte key is the right length for AES-256-GCM");
        Self {
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
            rng,
        }
    }

    /// Seals `plaintext`, bound to `context` (which row and column it belongs to).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| SealError::Seal)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens a value sealed with [`Sealer::seal`] under the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<SecretBytes, SealError> {
        let Some((&FORMAT_V1, rest)) = sealed.split_first() else {
            return Err(SealError::Open);
        };
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Open)?;
        Ok(SecretBytes::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        let rng = SystemRandom::new();
        Sealer::new(&RootKey::generate(&rng).expect("random"), rng)
    }

    #[test]
    fn sealed_values_open_only_in_their_context_and_key() {
        let s = sealer();
        let sealed = s.seal(b"client-secret", "provider:okta").expect("seal");
        assert!(!sealed.windows(13).any(|w| w == b"client-secret"));
        assert_eq!(
            s.open(&sealed, "provider:okta").expect("open").expose(),
            b"client-secret"
        );
        assert_eq!(s.open(&sealed, "provider:other"), Err(SealError::Open));
        assert_eq!(
            sealer().open(&sealed, "provider:okta"),
            Err(SealError::Open)
        );
        let mut damaged = sealed.clone();
        *damaged.last_mut().expect("not empty") ^= 1;
        assert_eq!(s.open(&damaged, "provider:okta"), Err(SealError::Open));
        assert_eq!(s.open(&[], "provider:okta"), Err(SealError::Open));
        assert_eq!(s.open(&[1, 2, 3], "provider:okta"), Err(SealError::Open));
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let s = sealer();
        assert_ne!(
            s.seal(b"x", "c").expect("seal"),
            s.seal(b"x", "c").expect("seal")
        );
    }

    #[test]
    fn key_file_is_created_0600_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("root.key");
        let source = RootKeySource::File(path.clone());
        let rng = SystemRandom::new();
        assert!(!RootKey::exists(&source));
        assert!(matches!(
            RootKey::load(&source, false, &rng),
            Err(RootKeyError::Read { .. })
        ));
        let first = RootKey::load(&source, true, &rng).expect("create");
        assert!(first.created);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = RootKey::load(&source, true, &rng).expect("read");
        assert!(!again.created);
        assert_eq!(again.key.bytes, first.key.bytes);
        assert!(!format!("{:?}", again.key).contains(&first.key.encode()));
    }

    #[test]
    fn bad_key_files_say_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("root.key");
        std::fs::write(&path, "c2hvcnQ=\n").expect("write");
        let err = RootKey::load(&RootKeySource::File(path), true, &SystemRandom::new())
            .expect_err("short key");
        assert!(err.to_string().contains("not 32"), "{err}");
    }

    #[test]
    fn secret_bytes_never_debug_print() {
        assert_eq!(
            format!("{:?}", SecretBytes::new(b"abc".to_vec())),
            "SecretBytes(<3 bytes redacted>)"
        );
    }
}
