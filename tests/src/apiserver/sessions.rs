//! Exec, attach and port-forward: the `101 Switching Protocols` over WebSocket or SPDY, and the
//! session [`crate::upgrade`] plays on the upgraded connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header;
use http::{Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::response::empty;
use super::route::{Context, Target, storage_namespace};
use super::status::Status;
use super::streams::StreamGuard;
use super::{Body, Shared, lock};
use crate::upgrade::{self, ExecCommand, PortForwardTarget};

pub(super) fn upgrade_session(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    pod: &str,
    subresource: &str,
    mut context: Context,
) -> Result<Response<Body>, Status> {
    let namespace = storage_namespace(target);
    let resource = format!("pods/{subresource}");
    if !matches!(context.method, Method::GET | Method::POST) {
        return Err(Status::method_not_allowed(
            context.method.as_str(),
            &resource,
        ));
    }
    shared.store.get(&target.info, namespace, pod)?;
    if shared.refuse_upgrades.load(Ordering::SeqCst) {
        return Err(Status::forbidden(
            &context.user.name,
            "create",
            &resource,
            "",
            pod,
            Some(namespace),
        ));
    }
    let Some(on_upgrade) = context.upgrade.take() else {
        return Err(Status::bad_request("Upgrade request required"));
    };
    if context.version != Version::HTTP_11 {
        return Err(Status::bad_request("Upgrade request required"));
    }
    let upgrade_to = context.header("upgrade").to_owned();
    let values = |name: &str| -> Vec<String> {
        context
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let portforward = subresource == "portforward";
    let target_addr = *lock(&shared.port_forward_target);
    let forward_to = if portforward {
        Some(PortForwardTarget {
            upstream: target_addr.ok_or_else(|| {
                Status::internal("the stand-in has no port-forward target: see StandInBuilder::port_forward_target")
            })?,
        })
    } else {
        None
    };
    let command = ExecCommand {
        command: context.query.all("command"),
        stdin: context.query.flag("stdin"),
        tty: context.query.flag("tty"),
    };
    let ports: Vec<u16> = context
        .query
        .all("ports")
        .iter()
        .flat_map(|p| {
            p.split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|p| p.parse().ok())
        .collect();

    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    let session: Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    if upgrade_to.eq_ignore_ascii_case("websocket") {
        let key = context.header("sec-websocket-key").to_owned();
        if key.is_empty() || context.header("sec-websocket-version") != "13" {
            return Err(Status::bad_request(
                "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            ));
        }
        let supported = if portforward {
            upgrade::PORTFORWARD_WS_PROTOCOLS
        } else {
            upgrade::EXEC_WS_PROTOCOLS
        };
        let offered = values("sec-websocket-protocol");
        let protocol = upgrade::select_protocol(&offered, supported).ok_or_else(|| {
            Status::bad_request(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
            ))
        })?;
        response = response
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header("sec-websocket-accept", upgrade::websocket_accept(&key))
            .header("sec-websocket-protocol", protocol);
        session = match forward_to {
            Some(forward_to) => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_websocket_portforward(io, protocol, ports, forward_to).await;
            })),
            None => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_websocket_exec(io, protocol, command).await;
            })),
        };
    } else if upgrade_to.eq_ignore_ascii_case(upgrade::SPDY_UPGRADE) {
        let supported: &[&'static str] = if portforward {
            &[upgrade::PORTFORWARD_SPDY_PROTOCOL]
        } else {
            upgrade::EXEC_SPDY_PROTOCOLS
        };
        let offered = values("x-stream-protocol-version");
        let protocol = upgrade::select_protocol(&offered, supported).ok_or_else(|| {
            Status::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
            )
        })?;
        response = response
            .header(header::UPGRADE, upgrade::SPDY_UPGRADE)
            .header(header::CONNECTION, "Upgrade")
            .header("x-stream-protocol-version", protocol);
        session = match forward_to {
            Some(forward_to) => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_spdy_portforward(io, forward_to).await;
            })),
            None => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_spdy_exec(io, protocol, command).await;
            })),
        };
    } else {
        return Err(Status::bad_request(format!(
            "unsupported upgrade: {upgrade_to:?}"
        )));
    }
    let guard = StreamGuard::new(&shared.streams, |s| &mut s.upgrades);
    lock(&shared.sessions).spawn(async move {
        let _guard = guard;
        session.await;
    });
    Ok(response.body(empty()).expect("the 101 headers are valid"))
}

async fn with_upgraded<F, Fut>(on_upgrade: OnUpgrade, session: F)
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match on_upgrade.await {
        Ok(upgraded) => session(TokioIo::new(upgraded)).await,
        Err(error) => tracing::debug!(%error, "stand-in upgrade failed"),
    }
}
