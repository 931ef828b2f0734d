//! Runs the stand-in kube-apiserver on its own, enforcing RBAC, and writes an admin kubeconfig
//! for it: a cluster to try `./scripts/run` against on a machine without one.
//!
//! ```sh
//! cargo run -p infra-tests --bin standin -- /tmp/standin-kubeconfig
//! KUBECONFIG=/tmp/standin-kubeconfig ./scripts/run
//! ```
//!
//! The kubeconfig's user holds the static bearer token (the group `system:masters`), as a
//! cluster admin's kubeconfig would. It runs until interrupted.

use std::path::PathBuf;

use infra_tests::apiserver::StandIn;
use infra_tests::kubectl::{Credentials, Kubectl};

#[tokio::main]
async fn main() {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: standin KUBECONFIG-PATH");
        std::process::exit(2);
    };
    let token = "stand-in-admin-token";
    let standin = StandIn::builder()
        .bearer_token(token)
        .enforce_rbac()
        .start()
        .await;
    let kubectl = Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::Token(token.to_owned()),
    );
    if let Err(error) = std::fs::copy(kubectl.kubeconfig(), &path) {
        eprintln!("standin: writing {}: {error}", path.display());
        std::process::exit(1);
    }
    eprintln!(
        "standin: a kube-apiserver stand-in at {}, enforcing RBAC; kubeconfig in {}",
        standin.url(),
        path.display()
    );
    let _ = tokio::signal::ctrl_c().await;
}
