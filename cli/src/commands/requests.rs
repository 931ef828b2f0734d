//! `infra request` (ask for access for a while, and with `--wait` until it is decided) and
//! `infra requests list|show|approve|deny|cancel|revoke|rules`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use infra_api::{AccessRequest, RequestState, Verdict};

use super::{Ctx, connect, sync_access};
use crate::args::{Format, RequestArgs, RequestsCommand};
use crate::output::{self, Table};
use crate::ui::HintExt;

/// How often `--wait` asks whether the request was decided.
const WAIT_POLL: Duration = Duration::from_millis(500);

fn duration(seconds: u64) -> String {
    infra_api::duration::format(Duration::from_secs(seconds))
}

pub fn requests_table(requests: &[AccessRequest]) -> String {
    let mut t = Table::default();
    t.row([
        "ID",
        "USER",
        "ROLE",
        "RESOURCE",
        "FOR",
        "STATE",
        "APPROVALS",
        "REASON",
    ]);
    for r in requests {
        let approvals = r
            .reviews
            .iter()
            .filter(|v| v.verdict == Verdict::Approve)
            .count();
        let state = match (r.state, r.access_ends) {
            (RequestState::Approved, Some(ends)) => format!("approved until {ends}"),
            (state, _) => state.to_string(),
        };
        t.row([
            r.id.to_string(),
            r.user.clone(),
            r.role.clone(),
            r.resource.clone(),
            duration(r.duration_seconds),
            state,
            format!("{approvals}/{}", r.approvals_needed),
            r.reason.clone(),
        ]);
    }
    t.render()
}

fn describe(r: &AccessRequest) -> String {
    let mut text = format!(
        "Request {}: {} asks for {} on {} for {} ({:?}), rule {:?}: {}",
        r.id,
        r.user,
        r.role,
        r.resource,
        duration(r.duration_seconds),
        r.reason,
        r.rule,
        r.state
    );
    if let (RequestState::Approved, Some(ends)) = (r.state, r.access_ends) {
        let _ = write!(text, " until {ends}");
    }
    for review in &r.reviews {
        let _ = write!(
            text,
            "\n  {} by {} at {}{}",
            match review.verdict {
                Verdict::Approve => "approved",
                Verdict::Deny => "denied",
            },
            review.reviewer,
            review.at,
            if review.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", review.comment)
            }
        );
    }
    if let Some(by) = &r.ended_by {
        let _ = write!(
            text,
            "\n  ended by {by}{}",
            r.end_comment
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
    text
}

pub async fn ask(ctx: &Ctx, args: &RequestArgs) -> Result<()> {
    let (mut config, _, client) = connect(ctx)?;
    let new = infra_api::NewRequest {
        resource: args.resource.clone(),
        role: args.role.clone(),
        duration_seconds: args.for_.as_secs(),
        reason: args.reason.clone(),
    };
    let mut request = client
        .ask(&new)
        .await
        .context("asking for access")
        .hint("`infra requests rules` shows what you may ask for")?;
    match request.state {
        RequestState::Pending => eprintln!(
            "  Request {} is pending: {} on {} for {}; {} approval(s) needed",
            request.id,
            request.role,
            request.resource,
            duration(request.duration_seconds),
            request.approvals_needed
        ),
        state => eprintln!("  Request {} is {state}", request.id),
    }
    if args.wait && request.state == RequestState::Pending {
        eprintln!("  Waiting for a reviewer (Ctrl-C stops waiting; the request stays)...");
        while request.state == RequestState::Pending {
            tokio::time::sleep(WAIT_POLL).await;
            request = client.request(request.id).await?;
        }
    }
    match request.state {
        RequestState::Approved => {
            sync_access(ctx, &mut config, &client).await?;
            let destination = request
                .resource
                .split_once('.')
                .map_or(request.resource.as_str(), |(d, _)| d);
            eprintln!(
                "  Approved: {} on {} until {}; kubectl works now (context infra:{destination})",
                request.role,
                request.resource,
                request
                    .access_ends
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            );
        }
        RequestState::Pending => {
            eprintln!(
                "  `infra requests show {}` shows it; reviewers see it in `infra requests list --pending`",
                request.id
            );
        }
        _ if args.wait => {
            return Err(anyhow!("{}", describe(&request)));
        }
        _ => {}
    }
    if args.output.output != Format::Table {
        output::emit(args.output.output, &request, String::new)?;
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, command: RequestsCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        RequestsCommand::List(args) => {
            let mut query: Vec<(&str, String)> = Vec::new();
            if args.pending {
                query.push(("pending", "true".into()));
            }
            if args.all {
                query.push(("all", "true".into()));
            }
            if let Some(state) = args.state {
                query.push(("state", state));
            }
            let list = client.requests(&query).await?;
            output::emit(args.output.output, &list, || requests_table(&list))
        }
        RequestsCommand::Show(args) => {
            let request = client.request(args.id).await?;
            output::emit(args.output.output, &request, || describe(&request) + "\n")
        }
        RequestsCommand::Approve(args) => {
            let r = client
                .act_on_request(args.id, "approve", args.comment)
                .await?;
            match r.state {
                RequestState::Approved => eprintln!(
                    "  Approved request {}: {} has {} on {} until {}",
                    r.id,
                    r.user,
                    r.role,
                    r.resource,
                    r.access_ends.map(|t| t.to_string()).unwrap_or_default()
                ),
                _ => eprintln!(
                    "  Recorded your approval of request {} ({} of {} needed)",
                    r.id,
                    r.reviews
                        .iter()
                        .filter(|v| v.verdict == Verdict::Approve)
                        .count(),
                    r.approvals_needed
                ),
            }
            Ok(())
        }
        RequestsCommand::Deny(args) => {
            let r = client.act_on_request(args.id, "deny", args.comment).await?;
            eprintln!("  Denied request {} of {}", r.id, r.user);
            Ok(())
        }
        RequestsCommand::Cancel(args) => {
            let r = client
                .act_on_request(args.id, "cancel", args.comment)
                .await?;
            eprintln!("  Cancelled request {}", r.id);
            Ok(())
        }
        RequestsCommand::Revoke(args) => {
            let r = client
                .act_on_request(args.id, "revoke", args.comment)
                .await?;
            eprintln!(
                "  Revoked request {}: {} no longer has {} on {}",
                r.id, r.user, r.role, r.resource
            );
            Ok(())
        }
        RequestsCommand::Rules(args) => {
            let rules = client.request_rules().await?;
            output::emit(args.output.output, &rules, || {
                let mut t = Table::default();
                t.row(["NAME", "SOURCE", "RULE"]);
                for r in &rules {
                    t.row([
                        r.rule.name.clone(),
                        r.source.to_string(),
                        r.description.clone(),
                    ]);
                }
                t.render()
            })
        }
    }
}
