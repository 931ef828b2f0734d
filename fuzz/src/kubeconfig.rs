//! `kubeconfig`: kubeconfig files as the proxy reads them: `kube::config::Kubeconfig::from_yaml`,
//! then [`infra_proxy::upstream::from_kube`] (kube's `Config` and TLS settings, the credential,
//! [`Upstream::new`](infra_proxy::upstream::Upstream::new)), which dials nothing.
//!
//! Input: the file's bytes (read lossily as UTF-8, leading byte-order marks dropped).
//!
//! `from_kube` takes a path, so the text is written to a file of this process and read back
//! from there, exactly as `--kubeconfig` is. It only goes that far when the kubeconfig is
//! hermetic: **a kubeconfig with an exec plugin or an auth provider makes kube run a command
//! while it builds the TLS settings** (kube's `exec_identity_pem`, called by
//! `rustls_client_config` before `from_kube` refuses such users), and file references
//! (`certificate-authority`, `client-certificate`, `client-key`, `tokenFile`) read the file
//! system; fuzz input must do neither, so those kubeconfigs stop after parsing.
//!
//! Invariants:
//!
//! - never panics;
//! - a kubeconfig that parses serializes, and reads back from that to the same value;
//! - `from_kube` either fails or gives an upstream for an `https` URL that can address a
//!   request path, whose credential is the selected user's bearer token when it has one.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use infra_proxy::upstream::{PoolSettings, from_kube};
use kube::config::Kubeconfig;

use crate::show;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // As every binary of the project does first thing: the one crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Invariant: a current-thread runtime builds unless the process is out of resources.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Whether loading `config` can neither run a command nor read a file.
fn hermetic(config: &Kubeconfig) -> bool {
    let clusters = config
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
        .all(|c| c.certificate_authority.is_none());
    let users = config
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .all(|a| {
            a.exec.is_none()
                && a.auth_provider.is_none()
                && a.token_file.is_none()
                && a.client_certificate.is_none()
                && a.client_key.is_none()
        });
    clusters && users
}

/// A file of this process and thread to hand `from_kube`.
fn scratch_file() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!(
        "infra-fuzz-kubeconfig-{}-{thread}.yaml",
        std::process::id()
    ))
}

/// The `kubeconfig` target.
pub fn kubeconfig(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    let text = lossy.trim_start_matches('\u{feff}');
    let Ok(config) = Kubeconfig::from_yaml(text) else {
        return;
    };
    let context = |what: &str| format!("{what}\nkubeconfig: {config:?}\ninput: {}", show(data));

    // Invariant (both): a parsed kubeconfig is strings, maps, lists and JSON values.
    let json = serde_json::to_value(&config).expect("a kubeconfig serializes");
    let back: Kubeconfig = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{}", context(&format!("does not read back: {e}\n{json}"))));
    assert_eq!(
        serde_json::to_value(&back).expect("a kubeconfig serializes"),
        json,
        "{}",
        context("reads back to another value")
    );

    if !hermetic(&config) {
        return;
    }
    let path = scratch_file();
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes()));
    if written.is_err() {
        return;
    }
    let upstream = runtime().block_on(from_kube(Some(&path), None, PoolSettings::default()));
    let _ = std::fs::remove_file(&path);
    let Ok(upstream) = upstream else {
        return;
    };
    let description = format!("{upstream:?}");
    assert!(
        description.contains("https://"),
        "{}",
        context(&format!("an upstream that is not https: {description}"))
    );
    assert!(
        upstream.uri_for("/api/v1/namespaces?limit=1").is_ok(),
        "{}",
        context("the upstream cannot address a request")
    );
    let user = config
        .current_context
        .as_ref()
        .and_then(|name| config.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.as_ref())
        .and_then(|user| config.auth_infos.iter().find(|a| &a.name == user))
        .and_then(|a| a.auth_info.as_ref());
    let has_token = user.is_some_and(|u| u.token.is_some());
    assert_eq!(
        upstream.credential().is_some(),
        has_token,
        "{}",
        context("the upstream credential is not the user's token")
    );
}
