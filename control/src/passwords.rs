//! Local users' passwords: Argon2id hashes, the password policy, and equal-time refusals.
//!
//! - Hashes are PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a 16-byte salt
//!   from `ring`. A hash made with other parameters still verifies, and its
//!   [`Verification::Match`] says `needs_rehash`: store a fresh one after the login.
//! - A password has 12 to 256 characters, is not the user's name, and is not a common password
//!   (an embedded list; also matched with leading and trailing digits and symbols removed, so
//!   `Password123!` counts as `password`).
//! - An unknown user (or one without a password) is verified against a dummy hash with the same
//!   parameters, so the answer and its time are the same as for a wrong password.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::Semaphore;

use infra_authz::policy::Secret;

/// Argon2id memory cost in KiB (32 MiB).
///
/// Chosen with [`T_COST`] so that one hash takes 100–300 ms on the project's machines (2 cores,
/// 24 GiB). Measured 2026-11-22 on the build machine, argon2 and blake2 at opt-level 3, while
/// other builds kept its load average between 5 and 20: **136 ms of CPU time per hash** (mean of
/// 10; wall time 149 ms best-of-5 at load 5, up to ~360 ms at load 15). In the same runs the OWASP
/// minimum (19 MiB, t=2) took 32–44 ms of CPU, 32 MiB with t=3 took 110 ms, and 64 MiB with t=2
/// took 169 ms. The `argon2_parameters_take_about_150_ms` test in `tests/tests/store/hash_cost.rs` prints
/// the time on every run.
pub const M_COST: u32 = 32 * 1024;
/// Argon2id passes.
pub const T_COST: u32 = 4;
/// Argon2id lanes: one, so a login takes one core and the other keeps serving.
pub const P_COST: u32 = 1;

/// The shortest password accepted, in characters.
pub const MIN_LEN: usize = 12;
/// The longest password accepted, in characters.
pub const MAX_LEN: usize = 256;
/// The longest password a login is checked with, in bytes; a longer one is refused before it
/// is hashed (hashing a megabyte costs a third of a second).
pub use infra_authz::policy::names::MAX_PASSWORD_BYTES;

const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

/// Common passwords, one a line, lower case.
const COMMON: &str = include_str!("common_passwords.txt");

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The password is shorter than [`MIN_LEN`] characters.
    #[error("the password is shorter than {MIN_LEN} characters")]
    TooShort,
    /// The password is longer than [`MAX_LEN`] characters.
    #[error("the password is longer than {MAX_LEN} characters")]
    TooLong,
    /// The password is the user's name.
    #[error("the password may not be the user's name")]
    SameAsName,
    /// The password is on the list of common passwords.
    #[error("the password is too common; choose a less guessable one")]
    Common,
}

/// Why hashing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The system's random number generator failed to make a salt.
    #[error("cannot hash a password: the random number generator failed")]
    Salt,
    /// Argon2 refused its input or parameters.
    #[error("cannot hash a password: {0}")]
    Argon2(String),
}

/// Checks `password` against the policy for user `name`.
pub fn check_policy(password: &str, name: &str) -> Result<(), PolicyError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(PolicyError::TooShort);
    }
    if len > MAX_LEN {
        return Err(PolicyError::TooLong);
    }
    let lower = password.to_lowercase();
    if lower == name.to_lowercase() {
        return Err(PolicyError::SameAsName);
    }
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    let common = common();
    if common.contains(lower.as_str()) || (!core.is_empty() && common.contains(core)) {
        return Err(PolicyError::Common);
    }
    Ok(())
}

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is right.
    Match {
        /// The stored hash was made with other parameters; store a fresh one.
        needs_rehash: bool,
    },
    /// The password is wrong, the user is unknown, or the user has no password.
    Mismatch,
}

/// Hashes and verifies passwords with fixed Argon2id parameters.
///
/// At most as many hashes run at once as there are cores, so a burst of logins queues rather
/// than taking `M_COST` of memory each all at once.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    dummy: Arc<str>,
    rng: SystemRandom,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("p_cost", &self.params.p_cost())
            .finish_non_exhaustive()
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new(M_COST, T_COST, P_COST)
    }
}

impl Passwords {
    /// A hasher with the given Argon2id costs (memory in KiB, passes, lanes). Tests that do
    /// not measure time may use small ones.
    ///
    /// # Panics
    ///
    /// When the costs are outside what Argon2 accepts; they are constants of the program.
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        let params = Params::new(m_cost, t_cost, p_cost, Some(OUTPUT_LEN))
            .expect("argon2 parameters are constants within argon2's limits");
        let rng = SystemRandom::new();
        // A hash that nothing matches, made with the current parameters: verifying against it
        // costs what verifying a real one does. The salt need not be secret.
        let mut salt = [0u8; SALT_LEN];
        let _ = rng.fill(&mut salt);
        let dummy = format!(
            "$argon2id$v=19$m={m_cost},t={t_cost},p={p_cost}${}${}",
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode([0u8; OUTPUT_LEN]),
        );
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            params,
            dummy: dummy.into(),
            rng,
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.params.clone(),
        )
    }

    /// Hashes `password` with a fresh salt. Blocking: takes about 150 ms.
    pub fn hash_blocking(&self, password: &Secret) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_LEN];
        self.rng.fill(&mut salt).map_err(|_| HashError::Salt)?;
        self.argon2()
            .hash_password_with_salt(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Argon2(e.to_string()))
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is none (or
    /// it does not parse), so that every refusal costs the same. Blocking: about 150 ms.
    pub fn verify_blocking(&self, password: &Secret, stored: Option<&str>) -> Verification {
        let parsed = stored.and_then(|s| PasswordHash::new(s).ok());
        let (hash, real) = match parsed {
            Some(hash) => (hash, true),
            None => (
                PasswordHash::new(&self.dummy).expect("the dummy hash is a valid PHC string"),
                false,
            ),
        };
        let ok = self
            .argon2()
            .verify_password(password.expose().as_bytes(), &hash)
            .is_ok();
        if ok && real {
            Verification::Match {
                needs_rehash: !self.is_current(&hash),
            }
        } else {
            Verification::Mismatch
        }
    }

    /// Whether `hash` was made with this hasher's algorithm and parameters.
    fn is_current(&self, hash: &PasswordHash) -> bool {
        hash.algorithm == argon2::ARGON2ID_IDENT
            && hash.version == Some(argon2::Version::V0x13.into())
            && Params::try_from(hash).is_ok_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            })
    }

    /// [`Passwords::hash_blocking`] on the blocking pool, one of at most as many as cores.
    pub async fn hash(&self, password: &Secret) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let this = self.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || this.hash_blocking(&password))
            .await
            .expect("hashing does not panic")
    }

    /// [`Passwords::verify_blocking`] on the blocking pool, one of at most as many as cores.
    pub async fn verify(&self, password: &Secret, stored: Option<&str>) -> Verification {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let this = self.clone();
        let password = password.clone();
        let stored = stored.map(str::to_owned);
        tokio::task::spawn_blocking(move || this.verify_blocking(&password, stored.as_deref()))
            .await
            .expect("verifying does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Passwords {
        Passwords::new(64, 1, 1)
    }

    #[test]
    fn the_policy_says_why() {
        assert_eq!(check_policy("short", "u"), Err(PolicyError::TooShort));
        assert_eq!(
            check_policy(&"x".repeat(257), "u"),
            Err(PolicyError::TooLong)
        );
        assert!(check_policy(&"\u{e9}".repeat(256), "u").is_ok());
        assert_eq!(
            check_policy("Alice@Example.com", "alice@example.com"),
            Err(PolicyError::SameAsName)
        );
        for common in [
            "password1234",
            "Password123!",
            "qwertyuiop12",
            "123456789012",
            "iloveyou2024!",
        ] {
            assert_eq!(
                check_policy(common, "u"),
                Err(PolicyError::Common),
                "{common}"
            );
        }
        assert!(check_policy("correct horse battery staple", "u").is_ok());
    }

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let p = fast();
        let pw = Secret::new("correct horse battery staple");
        let hash = p.hash_blocking(&pw).expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            p.verify_blocking(&pw, Some(&hash)),
            Verification::Match {
                needs_rehash: false
            }
        );
        let wrong = Secret::new("incorrect horse battery staple");
        assert_eq!(
            p.verify_blocking(&wrong, Some(&hash)),
            Verification::Mismatch
        );
        assert_eq!(p.verify_blocking(&pw, None), Verification::Mismatch);
        assert_eq!(
            p.verify_blocking(&pw, Some("garbage")),
            Verification::Mismatch
        );
    }

    #[test]
    fn other_parameters_ask_for_a_rehash() {
        let old = Passwords::new(128, 1, 1);
        let pw = Secret::new("correct horse battery staple");
        let hash = old.hash_blocking(&pw).expect("hash");
        assert_eq!(
            fast().verify_blocking(&pw, Some(&hash)),
            Verification::Match { needs_rehash: true }
        );
    }

    #[test]
    fn the_dummy_hash_has_the_current_parameters() {
        let p = Passwords::default();
        let dummy = PasswordHash::new(&p.dummy).expect("parses");
        assert!(p.is_current(&dummy));
    }
}
