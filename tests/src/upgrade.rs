//! The server side of Kubernetes' streaming protocols, for the stand-in kube-apiserver.
//!
//! The HTTP side (`apiserver.rs`) answers the `101 Switching Protocols` and hands the
//! upgraded connection to one of the `serve_*` functions here, which then play kubelet:
//!
//! | kubectl | transport | here |
//! | --- | --- | --- |
//! | `exec`, `attach`, `cp` (1.30+ default) | WebSocket, subprotocol `v5.channel.k8s.io` (older: v4…v1) | [`serve_websocket_exec`] |
//! | the same with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, or against old servers | SPDY/3.1, `X-Stream-Protocol-Version: v5.channel.k8s.io` … | [`serve_spdy_exec`] |
//! | `port-forward` (1.31+ default) | WebSocket, subprotocol `SPDY/3.1+portforward.k8s.io`: SPDY frames inside binary messages | [`serve_websocket_portforward`] |
//! | `port-forward` with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` | SPDY/3.1, `portforward.k8s.io` | [`serve_spdy_portforward`] |
//!
//! The "container" is a tiny interpreter (see `container.rs`: `echo`, `cat`, `stderr-echo`,
//! `sh -c 'exit N'`, `true`, `false`, the `tar` and `test -d` that `kubectl cp` runs; no command,
//! as for `attach`, echoes stdin); a forwarded port connects to a TCP address the test chose.
//!
//! WebSocket channel protocols prefix each binary message with a channel byte: 0 stdin, 1 stdout,
//! 2 stderr, 3 error (a `Status` in v4+), 4 resize. In v5 a message `[255, n]` closes channel
//! `n` (kubectl sends `[255, 0]` when its stdin ends). Over SPDY each of those is a stream the
//! client opens with a `streamType` header.
//!
//! Every function here returns when the session is over; errors (a client that breaks the
//! protocol, a dropped connection) end the session and are logged at debug level, never panic.

mod container;
mod exec;
mod portforward;
mod spdy;
mod tar;
#[cfg(test)]
mod test_client;
mod websocket;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncWrite};

/// Exec and attach subprotocols over WebSocket, most preferred first.
pub const EXEC_WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Exec and attach protocols over SPDY (`X-Stream-Protocol-Version`), most preferred first.
pub const EXEC_SPDY_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The `Upgrade` header value of kubectl's SPDY requests.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";

/// The port-forward protocol over SPDY (`X-Stream-Protocol-Version`).
pub const PORTFORWARD_SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// The prefix that marks a WebSocket subprotocol as SPDY tunnelled in binary messages.
pub const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// Port-forward subprotocols over WebSocket, most preferred first: SPDY tunnelled in WebSocket
/// (what kubectl 1.31+ asks for), then kubelet's channel protocol, which takes the ports from
/// the `ports` query parameter and gives each a data channel `2i` and an error channel `2i+1`.
pub const PORTFORWARD_WS_PROTOCOLS: &[&str] = &[
    "SPDY/3.1+portforward.k8s.io",
    "v4.channel.k8s.io",
    "channel.k8s.io",
];

/// The GUID RFC 6455 §1.3 appends to the client's key.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The command an exec session runs, from the request's `command`, `stdin` and `tty` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecCommand {
    /// `command` query parameters, in order.
    pub command: Vec<String>,
    /// `stdin=true`: the client sends stdin.
    pub stdin: bool,
    /// `tty=true`: one output stream (stdout) and a resize stream, no stderr.
    pub tty: bool,
}

/// Where the pod's forwarded ports lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForwardTarget {
    /// Every forwarded port, whatever its number, connects here (a TCP server the test started).
    pub upstream: std::net::SocketAddr,
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.trim().as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Picks the protocol to answer with: the first of `supported` (our preference order) that the
/// client offered. `offered` are header values as received; each may be a comma-separated list
/// (`Sec-WebSocket-Protocol`, `X-Stream-Protocol-Version`).
pub fn select_protocol<I, S>(offered: I, supported: &[&'static str]) -> Option<&'static str>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let offered: Vec<String> = offered
        .into_iter()
        .flat_map(|value| {
            value
                .as_ref()
                .split(',')
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    supported
        .iter()
        .copied()
        .find(|protocol| offered.iter().any(|o| o == protocol))
}

/// Serves an exec or attach session over WebSocket: `io` is the upgraded connection, `protocol`
/// the subprotocol the 101 named (one of [`EXEC_WS_PROTOCOLS`]).
pub async fn serve_websocket_exec(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    protocol: &str,
    command: ExecCommand,
) {
    exec::serve_websocket(io, exec::Version::from_name(protocol), command).await;
}

/// Serves an exec or attach session over SPDY: `protocol` is the `X-Stream-Protocol-Version`
/// the 101 named (one of [`EXEC_SPDY_PROTOCOLS`]).
pub async fn serve_spdy_exec(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    protocol: &str,
    command: ExecCommand,
) {
    exec::serve_spdy(io, exec::Version::from_name(protocol), command).await;
}

/// Serves port-forward over WebSocket: with a [`SPDY_TUNNEL_PREFIX`]ed `protocol` the binary
/// messages carry a SPDY connection (kubectl 1.31+); otherwise kubelet's channel protocol over
/// `ports` (the request's `ports` query parameter).
pub async fn serve_websocket_portforward(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    protocol: &str,
    ports: Vec<u16>,
    target: PortForwardTarget,
) {
    if protocol.starts_with(SPDY_TUNNEL_PREFIX) {
        portforward::serve_tunnelled_spdy(io, target).await;
    } else {
        portforward::serve_channels(io, ports, target).await;
    }
}

/// Serves port-forward over SPDY (`portforward.k8s.io`): each forwarded connection is a pair of
/// streams, `streamType: error` and `streamType: data`, sharing a `requestID`.
pub async fn serve_spdy_portforward(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    target: PortForwardTarget,
) {
    portforward::serve_spdy(io, target).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_matches_rfc6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn protocol_selection_prefers_ours_and_splits_lists() {
        assert_eq!(
            select_protocol(["v4.channel.k8s.io, v5.channel.k8s.io"], EXEC_WS_PROTOCOLS),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            select_protocol(["v2.channel.k8s.io", "channel.k8s.io"], EXEC_SPDY_PROTOCOLS),
            Some("v2.channel.k8s.io")
        );
        assert_eq!(
            select_protocol(["SPDY/3.1+portforward.k8s.io"], PORTFORWARD_WS_PROTOCOLS),
            Some("SPDY/3.1+portforward.k8s.io")
        );
        assert_eq!(
            select_protocol(["base64.channel.k8s.io"], EXEC_WS_PROTOCOLS),
            None
        );
        assert_eq!(
            select_protocol(Vec::<String>::new(), EXEC_WS_PROTOCOLS),
            None
        );
    }
}
