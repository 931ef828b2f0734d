//! Secret references (`env:NAME`, `file:PATH`) and the [`SecretSource`] they are resolved
//! through.

use std::env::VarError;
use std::fs::File;
use std::io;
use std::path::Path;

use super::errors::PolicyErrorKind;
use super::{MAX_SECRET_FILE_BYTES, read_limited};
use crate::policy::Secret;

/// Where `env:` and `file:` secret references are resolved. A parameter, so that tests never
/// touch the real environment or file system.
pub trait SecretSource {
    /// The value of environment variable `name`. `name` is never empty and never contains `=`
    /// or NUL.
    fn env(&self, name: &str) -> Result<String, VarError>;

    /// The content of the file at `path` (already resolved against the policy file's
    /// directory).
    fn read_file(&self, path: &Path) -> io::Result<String>;
}

/// The real [`SecretSource`]: the process environment, and files of at most
/// [`MAX_SECRET_FILE_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn env(&self, name: &str) -> Result<String, VarError> {
        std::env::var(name)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        let Some(bytes) = read_limited(File::open(path)?, MAX_SECRET_FILE_BYTES)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is larger than {MAX_SECRET_FILE_BYTES} bytes"),
            ));
        };
        String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not valid UTF-8"))
    }
}

/// The value of an `env:NAME` secret; errors name the variable, never the value.
pub(super) fn env_secret(
    secrets: &dyn SecretSource,
    name: &str,
) -> Result<Secret, PolicyErrorKind> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(PolicyErrorKind::BadEnvName {
            name: name.to_owned(),
        });
    }
    match secrets.env(name) {
        Ok(value) if value.is_empty() => Err(PolicyErrorKind::EmptySecret {
            from: Some(format!("environment variable {name:?}")),
        }),
        Ok(value) => Ok(Secret::new(value)),
        Err(VarError::NotPresent) => Err(PolicyErrorKind::EnvNotSet {
            name: name.to_owned(),
        }),
        Err(VarError::NotUnicode(_)) => Err(PolicyErrorKind::EnvNotUnicode {
            name: name.to_owned(),
        }),
    }
}

/// The content of a `file:PATH` secret (`PATH` relative to `base_dir`), less one trailing
/// newline; errors name the path, never the value.
pub(super) fn file_secret(
    secrets: &dyn SecretSource,
    base_dir: &Path,
    file: &str,
) -> Result<Secret, PolicyErrorKind> {
    if file.is_empty() {
        return Err(PolicyErrorKind::Invalid {
            what: "a `file:` secret",
            why: "names no file",
        });
    }
    let path = base_dir.join(file);
    match secrets.read_file(&path) {
        Ok(mut value) => {
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            if value.is_empty() {
                Err(PolicyErrorKind::EmptySecret {
                    from: Some(format!("file {}", path.display())),
                })
            } else {
                Ok(Secret::new(value))
            }
        }
        Err(e) => Err(PolicyErrorKind::SecretFile {
            path,
            reason: e.to_string(),
        }),
    }
}
