//! How the proxy authenticates to the apiserver: no credential, a fixed bearer token, or a
//! token file re-read as it rotates.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwapOption;
use http::HeaderValue;

/// How the proxy authenticates to the apiserver, besides a client certificate in the TLS config.
#[derive(Clone)]
pub enum Credential {
    /// Only the client certificate (or nothing).
    None,
    /// A fixed bearer token.
    Token(HeaderValue),
    /// A token file that rotates (the service-account token): re-read when it changes.
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The current `Bearer ...` value.
        current: Arc<ArcSwapOption<HeaderValue>>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile { path, .. } => write!(f, "TokenFile({})", path.display()),
        }
    }
}

impl Credential {
    /// A credential from a token file, read once now (failing if unreadable) and again every
    /// `every` after.
    pub fn token_file(path: PathBuf, every: Duration) -> Result<Self> {
        let current = Arc::new(ArcSwapOption::from_pointee(read_token(&path)?));
        let (p, c) = (path.clone(), Arc::clone(&current));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match read_token(&p) {
                    Ok(value) => c.store(Some(Arc::new(value))),
                    Err(error) => {
                        tracing::warn!(path = %p.display(), error = format!("{error:#}"), "cannot re-read the upstream token; keeping the previous one");
                    }
                }
            }
        });
        Ok(Self::TokenFile { path, current })
    }

    /// The `Authorization` value to send, if any.
    pub fn header(&self) -> Option<Arc<HeaderValue>> {
        match self {
            Self::None => None,
            Self::Token(value) => Some(Arc::new(value.clone())),
            Self::TokenFile { current, .. } => current.load_full(),
        }
    }
}

fn read_token(path: &PathBuf) -> Result<HeaderValue> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    bearer(token.trim())
}

/// `Bearer <token>` as a sensitive header value.
pub fn bearer(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow!("the upstream token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service-account token rotates on disk; the credential follows it.
    #[tokio::test(start_paused = true)]
    async fn a_rotated_token_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("infra-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, "first\n").expect("write");
        let credential =
            Credential::token_file(path.clone(), Duration::from_mins(1)).expect("readable");
        let value = |c: &Credential| {
            c.header()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .expect("a value")
        };
        assert_eq!(value(&credential), "Bearer first");

        std::fs::write(&path, "second\n").expect("write");
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(value(&credential), "Bearer second");

        // An unreadable file keeps the last good token.
        std::fs::remove_file(&path).expect("remove");
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(value(&credential), "Bearer second");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn credentials_never_print_their_token() {
        let credential = Credential::Token(bearer("s3cr3t").expect("header"));
        assert!(!format!("{credential:?}").contains("s3cr3t"));
    }
}
