//! Scenario: an export's position and lease (the OTLP export, `docs/audit.md`) — the trail read
//! in export order after a position, the lease held by one replica until it runs out, the
//! position moved only by the lease's holder, the retention sparing what is not exported yet;
//! and on PostgreSQL, an event whose transaction is still open holding back the ones committed
//! after it, so none is stepped over.

use infra_api::audit::{Event, Kind, SCHEMA_VERSION};
use infra_control::Store;
use infra_control::store::ExportPosition;
use sqlx::Connection as _;

use crate::{Raw, T0};

const SECOND_US: i64 = 1_000_000;
const MS: i64 = 1000;

fn event(id: &str, at_us: i64) -> Event {
    Event {
        schema: SCHEMA_VERSION,
        id: id.to_owned(),
        time: jiff::Timestamp::from_microsecond(at_us).expect("a time"),
        kind: Kind::Request,
        user: Some("suzie".to_owned()),
        ..Event::default()
    }
}

fn ids(events: &[(ExportPosition, Event)]) -> Vec<&str> {
    events.iter().map(|(_, e)| e.id.as_str()).collect()
}

pub(crate) async fn audit_exports(store: &Store, raw: &Raw) {
    let t0 = i64::try_from(T0).expect("T0") * SECOND_US;
    let now_ms = t0 / 1000;
    let state = store.export_state("x").await.expect("state");
    assert_eq!(state.after, ExportPosition::default());
    assert_eq!((state.exported, state.dropped), (0, 0));
    let events: Vec<Event> = (0..6)
        .map(|i| event(&format!("x-e{i}"), t0 - 100 * SECOND_US + i))
        .collect();
    store.record_audit_events(&events).await.expect("stored");
    // The trail holds the store's own events too: start after them.
    let mut after = ExportPosition::default();
    let mut seen = Vec::new();
    loop {
        let page = store.audit_after(after, 4).await.expect("read");
        let Some((last, _)) = page.last() else { break };
        assert!(page.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        assert!(page[0].0 > after);
        after = *last;
        seen.extend(ids(&page).into_iter().map(str::to_owned));
    }
    let ours: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|id| id.starts_with("x-"))
        .collect();
    assert_eq!(ours, ["x-e0", "x-e1", "x-e2", "x-e3", "x-e4", "x-e5"]);

    // The lease: one holder until it runs out (on SQLite, one control plane owns the store,
    // and takes it whatever a previous run left).
    assert!(
        store
            .take_export_lease("x", "r1", now_ms, now_ms + 15 * MS)
            .await
            .expect("take")
    );
    let sqlite = matches!(raw, Raw::Sqlite(_));
    let second = store
        .take_export_lease("x", "r2", now_ms + MS, now_ms + 16 * MS)
        .await
        .expect("take");
    assert_eq!(second, sqlite);
    if !sqlite {
        assert!(
            store
                .take_export_lease("x", "r1", now_ms + MS, now_ms + 16 * MS)
                .await
                .expect("renew")
        );
        // Ran out: another takes it, and the first may no longer move the position.
        assert!(
            store
                .take_export_lease("x", "r2", now_ms + 17 * MS, now_ms + 32 * MS)
                .await
                .expect("take over")
        );
    }
    assert!(
        !store
            .advance_export("x", "r1", after, 6, 0, now_ms)
            .await
            .expect("advance")
    );
    // Move past e0..e2 only.
    let page = store
        .audit_after(ExportPosition::default(), 1000)
        .await
        .expect("read");
    let upto = page.iter().find(|(_, e)| e.id == "x-e2").expect("x-e2").0;
    assert!(
        store
            .advance_export("x", "r2", upto, 3, 1, now_ms + 32 * MS)
            .await
            .expect("advance")
    );
    let state = store.export_state("x").await.expect("state");
    assert_eq!(state.after, upto);
    assert_eq!((state.exported, state.dropped), (3, 1));
    assert_eq!(state.holder, "r2");
    let rest = store.audit_after(state.after, 1000).await.expect("read");
    assert_eq!(ids(&rest)[..3], ["x-e3", "x-e4", "x-e5"]);

    // The retention spares what the export has not taken: e3..e5 are as old, and stay.
    let removed = store
        .purge_exported_audit(t0, 1000, "x")
        .await
        .expect("purge");
    assert!(removed >= 3, "{removed}");
    let left = store
        .audit_after(ExportPosition::default(), 1000)
        .await
        .expect("read");
    let left: Vec<&str> = ids(&left)
        .into_iter()
        .filter(|id| id.starts_with("x-"))
        .collect();
    assert_eq!(left, ["x-e3", "x-e4", "x-e5"]);
    store
        .release_export_lease("x", "r2")
        .await
        .expect("release");
    assert_eq!(store.export_state("x").await.expect("state").holder, "");

    if let Raw::Postgres(url) = raw {
        held_back_by_an_open_transaction(store, url, state.after).await;
    }
}

/// An event whose transaction is still open when a later one commits (its `seq` smaller, its
/// commit later) is not stepped over: nothing after it is read until it commits.
async fn held_back_by_an_open_transaction(store: &Store, url: &str, after: ExportPosition) {
    let mut open = sqlx::PgConnection::connect(url)
        .await
        .expect("raw postgres");
    sqlx::raw_sql(
        "BEGIN; INSERT INTO audit_events (event_id, at_us, kind, user_name, groups, destination, \
         verb, resource, namespace, name, decision, reason, body) VALUES ('slow', 0, 'request', \
         '', '', '', '', '', '', '', '', '', \
         '{\"schema\":1,\"id\":\"slow\",\"time\":\"2023-11-14T22:13:20Z\",\"kind\":\"request\"}')",
    )
    .execute(&mut open)
    .await
    .expect("an open transaction");
    store
        .record_audit_events(&[event("quick", 0)])
        .await
        .expect("stored");
    let read = store.audit_after(after, 1000).await.expect("read");
    assert!(!ids(&read).contains(&"quick"), "{:?}", ids(&read));
    // A follower (`GET /api/audit/stream`) reads in the same order, held back the same way.
    let all = infra_control::store::AuditFilter::default();
    let followed = store.follow_audit(&all, after, 1000).await.expect("follow");
    assert!(!ids(&followed).contains(&"quick"), "{:?}", ids(&followed));
    sqlx::raw_sql("COMMIT")
        .execute(&mut open)
        .await
        .expect("commit");
    open.close().await.expect("close");
    let read = store.audit_after(after, 1000).await.expect("read");
    let got = ids(&read);
    let slow = got.iter().position(|id| *id == "slow").expect("slow");
    let quick = got.iter().position(|id| *id == "quick").expect("quick");
    assert!(slow < quick, "{got:?}");
    let followed = store.follow_audit(&all, after, 1000).await.expect("follow");
    let got = ids(&followed);
    let slow = got
        .iter()
        .position(|id| *id == "slow")
        .expect("slow followed");
    let quick = got
        .iter()
        .position(|id| *id == "quick")
        .expect("quick followed");
    assert!(slow < quick, "{got:?}");
}
