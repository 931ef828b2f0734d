//! `infra audit`: the audit trail — what users did through the proxies and on the control
//! plane, with the grant that allowed each request or the reason it was denied — searched, or
//! followed as it happens (`--follow`).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use infra_api::audit::Event;

use super::{Ctx, connect};
use crate::args::{AuditArgs, Format};
use crate::output::{self, Table};
use crate::ui;

/// The largest page asked for.
const PAGE: usize = 1000;

/// `30m`, `1h`, `7d` ago, or an RFC 3339 time, as RFC 3339.
fn when(flag: &str, text: &str, now: SystemTime) -> Result<String> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.to_string());
    }
    let ago = crate::duration::parse(text).map_err(|why| {
        ui::hint(
            anyhow!("--{flag} {text:?}: {why}"),
            "give a duration ago (30m, 1h, 7d) or a time (2026-12-07T10:00:00Z)",
        )
    })?;
    let at = now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(jiff::Timestamp::try_from(at)
        .context("a time before 1970")?
        .to_string())
}

fn query(args: &AuditArgs, now: SystemTime) -> Result<Vec<(&'static str, String)>> {
    let mut query = Vec::new();
    let mut add = |key: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    };
    add("user", &args.user);
    add("group", &args.group);
    add("destination", &args.destination);
    add("namespace", &args.namespace);
    add("verb", &args.verb);
    add("resource", &args.resource);
    add("name", &args.name);
    add("kind", &args.kind);
    add("q", &args.grep);
    if args.denied {
        query.push(("decision", "deny".to_owned()));
    }
    if let Some(since) = &args.since {
        query.push(("since", when("since", since, now)?));
    }
    if let Some(until) = &args.until {
        query.push(("until", when("until", until, now)?));
    }
    Ok(query)
}

/// What an event was done to: `pods/web-1/exec`, or the control plane's target.
fn object(event: &Event) -> String {
    match (&event.resource, &event.target) {
        (Some(resource), _) => {
            let mut out = resource.clone();
            if let Some(name) = &event.name {
                out.push('/');
                out.push_str(name);
            }
            if let Some(sub) = &event.subresource {
                out.push('/');
                out.push_str(sub);
            }
            out
        }
        (None, Some(target)) => target.clone(),
        (None, None) => event.path.clone().unwrap_or_else(|| "-".to_owned()),
    }
}

fn row(event: &Event) -> [String; 6] {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    [
        output::time(Some(event.time)),
        dash(&event.user),
        dash(&event.destination),
        event
            .verb
            .clone()
            .or_else(|| event.action.clone())
            .unwrap_or_else(|| event.kind.as_str().to_owned()),
        object(event),
        dash(&event.decision),
    ]
}

const HEADER: [&str; 6] = [
    "TIME",
    "USER",
    "DESTINATION",
    "VERB",
    "RESOURCE/NAME",
    "DECISION",
];

/// The events, oldest first, for a terminal.
pub fn audit_table(events: &[Event]) -> String {
    let mut t = Table::new(HEADER);
    for event in events {
        t.row(row(event));
    }
    t.render()
}

/// One event as `--follow` prints it, in the format asked for.
fn followed(format: Format, event: &Event) -> Result<String> {
    Ok(match format {
        Format::Table => format!("{}\n", row(event).join("   ")),
        Format::Json => {
            let mut line = serde_json::to_string(event).context("encoding JSON")?;
            line.push('\n');
            line
        }
        Format::Yaml => format!(
            "---\n{}",
            serde_saphyr::to_string(event).context("encoding YAML")?
        ),
    })
}

pub async fn run(ctx: &Ctx, args: &AuditArgs) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    let filters = query(args, SystemTime::now())?;
    // The newest `limit` events, a page at a time.
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    while events.len() < args.limit {
        let mut q = filters.clone();
        q.push(("limit", (args.limit - events.len()).min(PAGE).to_string()));
        if let Some(cursor) = &cursor {
            q.push(("cursor", cursor.clone()));
        }
        let page = client.audit(&q).await?;
        events.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    events.reverse();
    let format = args.output.output;
    if !args.follow {
        return output::emit(format, &events, || audit_table(&events));
    }
    let mut out = if format == Format::Table {
        audit_table(&events)
    } else {
        let mut text = String::new();
        for event in &events {
            text.push_str(&followed(format, event)?);
        }
        text
    };
    ui::out(&out)?;
    // Events printed above are not printed again when the stream brings them too.
    let mut seen: HashSet<String> = events.into_iter().map(|e| e.id).collect();
    // `until` does not apply to what is still to come.
    let live: Vec<_> = filters.into_iter().filter(|(k, _)| *k != "until").collect();
    loop {
        let result = client
            .follow_audit(&live, |event| {
                if seen.remove(&event.id) {
                    return Ok(());
                }
                out = followed(format, &event)?;
                ui::out(&out)
            })
            .await;
        seen.clear();
        result?;
        // The server ends a stream after an hour: follow on.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_become_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        assert_eq!(
            when("since", "1h", now).expect("1h"),
            "2027-01-15T07:00:00Z"
        );
        assert_eq!(
            when("since", "2026-12-07T10:00:00Z", now).expect("a time"),
            "2026-12-07T10:00:00Z"
        );
        assert!(when("since", "yesterday", now).is_err());
    }

    #[test]
    fn the_table_shows_requests_and_control_actions_in_the_same_columns() {
        let request = Event {
            time: "2026-12-07T10:00:00Z".parse().expect("time"),
            user: Some("suzie".into()),
            destination: Some("prod".into()),
            verb: Some("exec".into()),
            resource: Some("pods".into()),
            name: Some("web-1".into()),
            subresource: Some("exec".into()),
            decision: Some("deny".into()),
            ..Event::default()
        };
        let change = Event {
            time: "2026-12-07T10:00:01Z".parse().expect("time"),
            kind: infra_api::audit::Kind::Change,
            user: Some("admin".into()),
            action: Some("grant.create".into()),
            target: Some("grant edit to user \"suzie\" on prod".into()),
            ..Event::default()
        };
        assert_eq!(
            audit_table(&[request, change]),
            "TIME                   USER    DESTINATION   VERB           RESOURCE/NAME                        DECISION\n\
             2026-12-07 10:00:00Z   suzie   prod          exec           pods/web-1/exec                      deny\n\
             2026-12-07 10:00:01Z   admin   -             grant.create   grant edit to user \"suzie\" on prod   -\n"
        );
    }
}
