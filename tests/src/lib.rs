//! Helpers that the end-to-end tests share: a test PKI ([`certs`]), a stand-in kube-apiserver
//! that speaks the real wire formats ([`apiserver`]) with the streaming protocols of exec,
//! attach and port-forward ([`upgrade`]), and the real `kubectl` with a kubeconfig of its own
//! ([`kubectl`]).
//!
//! The tests themselves live in `tests/*.rs`.

pub mod apiserver;
pub mod certs;
pub mod control;
pub mod hooks;
pub mod kubectl;
pub mod oidc;
pub mod otlp;
pub mod postgres;
pub mod proxy;
pub mod upgrade;

/// The proxy the harnesses start, for tests that set its options.
pub use infra_proxy;
