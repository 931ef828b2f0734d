//! The request pipeline: authenticate, read the impersonation asked for, compute attributes,
//! decide, answer access reviews ([`reviews`]) or rewrite and forward, record. One direction, no
//! back and forth; every refusal leaves through [`Refusal`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use infra_authz::attributes::{self, Attributes};
use infra_authz::clock::Clock;
use infra_authz::decision::{Decision, Identity};
use infra_authz::policy::Grant;

use crate::access::{Access, Outcome};
use crate::audit::{Audit, AuditId, Part, Record};
use crate::authn::Authenticator;
use crate::headers;
use crate::impersonation;
use crate::inflight::{InFlight, InFlightRequest};
use crate::metrics::{GaugeGuard, Metrics};
use crate::policy::PolicyHandle;
use crate::reviews;
use crate::server::Limits;
use crate::status::Refusal;
use crate::streams::{self, Registration, Streams};
use crate::sync::SyncState;
use crate::upstream::{self, Body, Upstream};

mod disagreement;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    /// This proxy's destination name.
    pub destination: String,
    /// Token verification.
    pub authn: Arc<Authenticator>,
    /// The policy in force.
    pub policy: Arc<PolicyHandle>,
    /// The apiserver.
    pub upstream: Arc<Upstream>,
    /// The audit log.
    pub audit: Audit,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock for token and grant expiry.
    pub clock: Arc<dyn Clock>,
    /// The snapshot state, when policy comes from Infra's control plane: a proxy that syncs
    /// from afar refuses to decide on stale policy.
    pub sync: Option<Arc<SyncState>>,
    /// Open long-running requests, closed when their user loses access.
    pub streams: Arc<Streams>,
    /// The request deadline, the body limit (and the listener's limits, not used here).
    pub limits: Limits,
    /// Requests in flight per user.
    pub in_flight: Arc<InFlight>,
    /// Whether RBAC bindings are kept, for the words of a 403 the cluster gives.
    pub rbac: Arc<crate::reconcile::RbacStatus>,
}

/// What the pipeline learned, for the audit line and metrics.
#[derive(Debug, Default)]
struct Trail {
    identity: Option<Identity>,
    /// The identity the caller impersonates, once allowed to.
    impersonated: Option<Identity>,
    attrs: Option<Attributes>,
    decision: Option<Decision>,
    forwarded: bool,
    /// A long-running request's end, to be told what to record then.
    on_end: Option<streams::OnEnd>,
}

impl Proxy {
    /// Handles one request from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let arrived = self.clock.now();
        let audit_id = AuditId::next();
        // Only the audit event needs these after the request is forwarded.
        let audited = self.audit.enabled().then(|| {
            (
                request.method().clone(),
                request.uri().path().to_owned(),
                request.headers().get(http::header::USER_AGENT).cloned(),
            )
        });
        let mut trail = Trail::default();
        let response = match self.pipeline(request, peer, audit_id, &mut trail).await {
            Ok(response) => response,
            Err(refusal) => {
                if let Some(identity) = &trail.identity {
                    tracing::debug!(
                        user = identity.user(),
                        reason = refusal.message(),
                        "refused"
                    );
                }
                refusal.into_response()
            }
        };
        let elapsed = started.elapsed();
        let decision = match &trail.decision {
            Some(Decision::Allow { .. }) => "allow",
            Some(_) => "deny",
            None => "none",
        };
        self.metrics
            .count_request(response.status().as_u16(), decision);
        self.metrics.latency.observe(elapsed.as_secs_f64());
        if let Some((method, path, user_agent)) = audited {
            // What the request learned moves into the record: no text is built here.
            let record = Record {
                time: arrived,
                audit_id,
                peer,
                method,
                path,
                user_agent,
                identity: trail.identity,
                impersonated: trail.impersonated,
                forwarded: trail.forwarded,
                attrs: trail.attrs,
                decision: trail.decision,
                code: response.status().as_u16(),
                latency: elapsed,
                part: Part::Whole,
            };
            let opened = response.status() == StatusCode::SWITCHING_PROTOCOLS
                || response.status().is_success();
            match trail.on_end {
                // A stream is open: its start now, its end when it closes.
                Some(on_end) if opened => {
                    let start = Record {
                        part: Part::Start,
                        ..record
                    };
                    let end = start.clone();
                    let audit = self.audit.clone();
                    on_end.set(move |revoked| {
                        audit.record(end.ended(started.elapsed(), revoked));
                    });
                    self.audit.record(start);
                }
                _ => self.audit.record(record),
            }
        }
        response
    }

    async fn pipeline(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        audit_id: AuditId,
        trail: &mut Trail,
    ) -> Result<Response<Body>, Refusal> {
        if self.audit.refuses() {
            return Err(Refusal::Unavailable(
                "infra-proxy cannot record requests in its audit log right now, and refuses what it cannot record (--audit-fail closed): please try again later".to_owned(),
            ));
        }
        let now = self.clock.now();
        if let Some(sync) = &self.sync
            && let Some(reason) = sync.refuse_reason(now)
        {
            return Err(Refusal::Unavailable(reason));
        }

        // 2. Authenticate.
        let token = headers::bearer_token(request.headers())?;
        let identity = match self.authn.authenticate(token, now).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::debug!(%peer, %error, "token refused");
                return Err(Refusal::Unauthorized);
            }
        };
        trail.identity = Some(identity.clone());

        // 3. The impersonation the client asks for (kubectl --as), decided in step 5.
        let impersonation = impersonation::requested_by(&request)?;

        // 4. Attributes.
        let attrs = attributes::parse(
            request.method().as_str(),
            request.uri().path(),
            request.uri().query(),
        )
        .map_err(|e| Refusal::BadRequest(e.to_string()))?;

        // 5. Decide: the caller's right to impersonate, the request as the identity it acts
        // as, and an upgrade's `create`.
        let upgrade = is_upgrade(&request);
        let access = Access {
            attrs,
            upgrade,
            impersonation,
        };
        let acting = self.decide(&access, &identity, now, trail)?;
        let attrs = &access.attrs;

        // 5b. Access reviews are answered here, from Infra's decision, never forwarded. They
        // count among the user's requests in flight while their body is read and answered.
        if let Some(kind) = reviews::Kind::of(attrs) {
            trail.attrs = Some(attrs.clone());
            let Some(_in_flight) = self.in_flight.acquire(identity.user()) else {
                return Err(self.too_many_requests(&identity));
            };
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let limit = reviews::MAX_REVIEW_BYTES.min(self.limits.max_request_body_bytes);
            let body =
                reviews::read_body(request.into_body(), limit, self.limits.request_timeout).await?;
            // With `--as`, the review is about the identity acted as, as the apiserver answers it.
            return reviews::answer(
                &self.policy,
                &acting,
                &kind,
                content_type.as_deref(),
                &body,
                now,
            );
        }

        // 6. Rewrite.
        let long_running = upgrade || is_long_running(attrs, request.uri().query());
        // What the apiserver itself does not time out, and whose body streams through it.
        let streaming = long_running || is_streaming(attrs);
        // A body the client says is too large is refused before anything goes upstream (an
        // upgrade's body is never read; a proxied one streams to its backend).
        let max_body = self.limits.max_request_body_bytes;
        if !streaming && request.body().size_hint().lower() > max_body {
            trail.attrs = Some(access.attrs);
            return Err(too_large(max_body));
        }
        let Some(in_flight) = self.in_flight.acquire(identity.user()) else {
            trail.attrs = Some(access.attrs);
            return Err(self.too_many_requests(&identity));
        };
        let registration = long_running.then(|| self.streams.register(token, access.clone()));
        trail.on_end = registration.as_ref().map(streams::Registration::on_end);
        let credential = self.upstream.credential();
        let impersonated = access.impersonation.as_ref();
        headers::rewrite(
            request.headers_mut(),
            &headers::Upstream {
                user: acting.user(),
                groups: &acting.groups().collect::<Vec<_>>(),
                uid: impersonated.and_then(|r| r.uid.as_deref()),
                extras: impersonated.map_or(&[], |r| &r.extras),
                authorization: credential.as_deref(),
                peer: peer.ip(),
                audit_id: audit_id.encode(&mut [0; 36]),
                upgrade,
            },
        )?;
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        *request.uri_mut() = self
            .upstream
            .uri_for(path_and_query)
            .map_err(|_| Refusal::BadRequest("the request path is not valid".to_owned()))?;
        trail.forwarded = true;
        trail.attrs = Some(access.attrs);

        // 7. Forward.
        if upgrade {
            // Upgrades are rare: boxed, so normal requests' futures stay small.
            let allowed_by = disagreement::allowed_grant(trail);
            return Box::pin(self.forward_upgrade(request, registration, in_flight, allowed_by))
                .await;
        }
        // A body that grows past the limit fails, which aborts the upstream request; if that
        // happens before the response, the answer is 413.
        let mut exceeded = None;
        let request = request.map(|body| {
            if streaming || body.is_end_stream() {
                upstream::boxed(body)
            } else {
                let flag = Arc::new(AtomicBool::new(false));
                exceeded = Some(Arc::clone(&flag));
                upstream::limited(body, max_body, flag)
            }
        });
        let send = self.upstream.send_holding(request, in_flight);
        let sent = if streaming {
            // Watches, logs and proxied requests have no deadline: they end when either side
            // ends them.
            send.await
        } else {
            let timeout = self.limits.request_timeout;
            tokio::time::timeout(timeout, send).await.map_err(|_| {
                tracing::warn!(
                    timeout_s = timeout.as_secs(),
                    "the apiserver did not answer in time"
                );
                Refusal::GatewayTimeout(format!(
                    "the server was unable to return a response in the time allotted, but may still be processing the request (the apiserver did not answer within {}s)",
                    timeout.as_secs()
                ))
            })?
        };
        let response = sent.map_err(|error| {
            if exceeded
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::Acquire))
            {
                return too_large(max_body);
            }
            tracing::warn!(%error, "upstream request failed");
            Refusal::BadGateway(format!(
                "infra-proxy could not reach the apiserver: {error}"
            ))
        })?;
        let (mut parts, mut body) = response.into_parts();
        headers::clean_response(&mut parts.headers, false);
        parts.version = http::Version::HTTP_11;
        if parts.status == StatusCode::FORBIDDEN
            && let Some(grant) = disagreement::allowed_grant(trail)
        {
            let note = self.disagreement(&grant);
            body =
                disagreement::explain(body, &mut parts.headers, &note, self.limits.request_timeout)
                    .await;
        }
        let body = match registration {
            Some(registration) => streams::closable(
                upstream::with_guard(body, GaugeGuard::new(&self.metrics.open_watches)),
                registration,
            ),
            None => body,
        };
        Ok(Response::from_parts(parts, body))
    }

    /// The refusal of a request over the user's allowance of requests in flight.
    fn too_many_requests(&self, identity: &Identity) -> Refusal {
        Refusal::TooManyRequests(format!(
            "Too many requests: {:?} has {} requests in flight through infra-proxy (--max-requests-in-flight-per-user; watches and other long-running requests count while open), please try again later",
            identity.user(),
            self.in_flight.limit()
        ))
    }

    /// Step 5: every decision of `access` for `caller` (see [`Access::decide`]), noted in
    /// `trail`; answers the identity the request acts as.
    fn decide(
        &self,
        access: &Access,
        caller: &Identity,
        now: std::time::SystemTime,
        trail: &mut Trail,
    ) -> Result<Identity, Refusal> {
        match access.decide(&self.policy, caller, now, Some(&self.metrics)) {
            Outcome::Allowed { acting, decision } => {
                trail.decision = Some(decision);
                if access.impersonation.is_some() {
                    trail.impersonated = Some(acting.clone());
                }
                Ok(acting)
            }
            Outcome::Denied {
                acting,
                decision,
                refusal,
            } => {
                trail.decision = Some(decision);
                trail.impersonated = acting;
                trail.attrs = Some(access.attrs.clone());
                Err(refusal)
            }
        }
    }

    /// The note for a 403 the cluster gives to what `grant` allowed (see [`disagreement`]).
    fn disagreement(&self, grant: &Grant) -> String {
        format!(
            "{}, but the cluster refused it: {}",
            disagreement::allowed_by(grant),
            self.rbac.hint()
        )
    }

    /// Forwards an upgrade on its own HTTP/1.1 connection; splices only after a 101. A 403 the
    /// cluster answers instead to what `allowed_by` allowed gets the note (see [`disagreement`]).
    async fn forward_upgrade(
        &self,
        mut request: Request<Incoming>,
        registration: Option<Registration>,
        in_flight: InFlightRequest,
        allowed_by: Option<Arc<Grant>>,
    ) -> Result<Response<Body>, Refusal> {
        let client_upgrade = hyper::upgrade::on(&mut request);
        let (mut parts, _body) = request.into_parts();
        parts.version = http::Version::HTTP_11;
        let upstream_request = Request::from_parts(parts, upstream::empty());
        let mut response = self
            .upstream
            .send_upgrade(upstream_request)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "upstream upgrade failed");
                Refusal::BadGateway(format!(
                    "infra-proxy could not reach the apiserver: {error}"
                ))
            })?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Not a tunnel: relay the answer, and close the client connection after it so no
            // bytes that follow can be read as anything else (the CVE-2018-1002105 shape).
            let (mut parts, body) = response.into_parts();
            headers::clean_response(&mut parts.headers, false);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            let mut body = upstream::boxed(body);
            if parts.status == StatusCode::FORBIDDEN
                && let Some(grant) = allowed_by
            {
                let note = self.disagreement(&grant);
                body = disagreement::explain(
                    body,
                    &mut parts.headers,
                    &note,
                    self.limits.request_timeout,
                )
                .await;
            }
            return Ok(Response::from_parts(
                parts,
                upstream::with_guard(body, in_flight),
            ));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let gauge = GaugeGuard::new(&self.metrics.open_upgrades);
        tokio::spawn(async move {
            let _gauge = gauge;
            // The session counts as the user's request in flight while it is open.
            let _in_flight = in_flight;
            let mut registration = registration;
            let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
            match (client, upstream) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let closed = async {
                        match registration.as_mut() {
                            Some(registration) => registration.closed().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                            if let Err(error) = copied {
                                tracing::debug!(%error, "upgraded stream ended");
                            }
                        }
                        () = closed => {
                            tracing::info!("closing an upgraded stream: its user lost access");
                        }
                    }
                }
                (client, upstream) => {
                    tracing::debug!(
                        client = client.is_ok(),
                        upstream = upstream.is_ok(),
                        "upgrade did not complete"
                    );
                }
            }
        });
        let (mut parts, _body) = response.into_parts();
        headers::clean_response(&mut parts.headers, true);
        Ok(Response::from_parts(parts, upstream::empty()))
    }
}

/// A body over the limit, in the apiserver's words.
fn too_large(limit: u64) -> Refusal {
    Refusal::TooLarge(format!(
        "Request entity too large: limit is {limit} bytes (infra-proxy's --max-request-body-bytes)"
    ))
}

/// Whether the client asks to switch protocols (WebSocket or SPDY).
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Requests the apiserver treats as long-running (its `LongRunningRequestCheck`: the `watch` and
/// `proxy` verbs, and the subresources `attach`, `exec`, `log`, `portforward` and `proxy`). It
/// puts no deadline on them and does not limit a proxied body, so neither does infra-proxy.
fn is_streaming(attrs: &Attributes) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            matches!(r.verb.as_str(), "watch" | "proxy")
                || matches!(
                    r.subresource.as_deref(),
                    Some("attach" | "exec" | "log" | "portforward" | "proxy")
                )
        }
        Attributes::NonResource(_) => false,
    }
}

/// Watches and followed logs: counted while open.
fn is_long_running(attrs: &Attributes, query: Option<&str>) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            r.verb == "watch"
                || (r.subresource.as_deref() == Some("log")
                    && query.is_some_and(|q| {
                        q.split('&').any(|p| p == "follow=true" || p == "follow=1")
                    }))
        }
        Attributes::NonResource(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: Option<&str>) -> Attributes {
        attributes::parse(method, path, query).expect("valid attributes")
    }

    #[test]
    fn what_the_apiserver_does_not_time_out_has_no_deadline_here() {
        for (method, path, query) in [
            ("GET", "/api/v1/namespaces/ns/pods", Some("watch=true")),
            ("GET", "/api/v1/namespaces/ns/pods/p/log", None),
            (
                "GET",
                "/api/v1/namespaces/ns/pods/p/log",
                Some("follow=true"),
            ),
            (
                "POST",
                "/api/v1/namespaces/ns/pods/p/exec",
                Some("command=ls"),
            ),
            ("GET", "/api/v1/namespaces/ns/pods/p/attach", None),
            ("POST", "/api/v1/namespaces/ns/pods/p/portforward", None),
            (
                "POST",
                "/api/v1/namespaces/ns/services/https:svc:443/proxy/upload",
                None,
            ),
            ("GET", "/api/v1/nodes/n1/proxy/stats/summary", None),
            ("GET", "/api/v1/proxy/namespaces/ns/pods/p", None),
        ] {
            assert!(is_streaming(&attrs(method, path, query)), "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/api/v1/namespaces/ns/pods"),
            ("POST", "/api/v1/namespaces/ns/configmaps"),
            ("PUT", "/api/v1/namespaces/ns/pods/p/status"),
            ("GET", "/version"),
        ] {
            assert!(!is_streaming(&attrs(method, path, None)), "{method} {path}");
        }
    }
}
