//! The apiserver from a kubeconfig (path and context) or the in-cluster service account: the
//! kube client settings, and the [`Upstream`] built from them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Credential, PoolSettings, Upstream, bearer};

/// The apiserver connection settings of a kubeconfig (path and context) or, with neither, of
/// the in-cluster service account.
pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: context.map(str::to_owned),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig given and not running in a cluster (no service account found)",
        )?,
    })
}

/// Loads the apiserver connection from a kubeconfig (path and context) or, with neither, the
/// in-cluster service account.
pub async fn from_kube(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
    settings: PoolSettings,
) -> Result<Upstream> {
    use kube::client::ConfigExt as _;

    let config = kube_config(kubeconfig, context).await?;
    let tls = config
        .rustls_client_config()
        .context("building TLS settings for the apiserver")?;
    let auth = &config.auth_info;
    let credential = if let Some(file) = &auth.token_file {
        Credential::token_file(PathBuf::from(file), Duration::from_mins(1))?
    } else if let Some(token) = &auth.token {
        use secrecy::ExposeSecret as _;
        Credential::Token(bearer(token.expose_secret())?)
    } else if auth.exec.is_some() || auth.auth_provider.is_some() {
        bail!(
            "the kubeconfig user authenticates with an exec plugin or auth provider; infra-proxy needs a client certificate, a token or a token file for the apiserver"
        );
    } else {
        Credential::None
    };
    Upstream::new(
        &config.cluster_url,
        config.tls_server_name.as_deref(),
        tls,
        credential,
        settings,
    )
}
