//! The audit trail's group writer: batches of events that arrive together (several proxies
//! sending at once, the in-process proxy's writer beside them) are stored in one transaction.
//!
//! Why: on SQLite, the cost of a transaction is mostly the pages it dirties, and the trail's
//! indexes by user and by id put each event on a page of its own; a transaction of 5,000 events
//! dirties hardly more of those pages than one of 1,000. So under load transactions grow and
//! each event costs less; alone, a batch is written at once, as before. Each caller still learns
//! how many of its own events were new. The writer is a task started with the first batch; it
//! holds the pool, not the store, and ends when the last handle of the store is dropped.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::audit_events::{EventRow, ROWS_PER_STATEMENT, SQLITE_ROWS_PER_STATEMENT, insert_sql};
use super::{Backend, Op as _, StoreError};

/// The most events one transaction takes: it holds SQLite's write lock while it runs, so it is
/// bounded (about a quarter of a second at 20,000 events a second).
const MAX_GROUP_EVENTS: usize = 5000;

/// Batches that may wait for the writer before senders wait for room.
const QUEUE: usize = 64;

/// One caller's batch, and where its answer goes.
struct Job {
    rows: Vec<EventRow>,
    done: oneshot::Sender<Result<u64, String>>,
}

/// The store's way to the writer (shared by its clones).
#[derive(Clone, Default)]
pub(super) struct Handle(Arc<OnceLock<mpsc::Sender<Job>>>);

/// What the writer writes with: the pool only.
pub(super) struct Writer {
    backend: Backend,
}

impl Writer {
    pub(super) fn new(backend: Backend) -> Self {
        Self { backend }
    }
}

fn gone() -> StoreError {
    StoreError::Database {
        operation: "record audit events",
        source: sqlx::Error::PoolClosed,
    }
}

impl Handle {
    /// Stores `rows` (skipping ids stored before) in a transaction with whatever else is
    /// waiting; answers how many were new. `writer` makes the writer the first time.
    pub(super) async fn record(
        &self,
        writer: impl FnOnce() -> Writer,
        rows: Vec<EventRow>,
    ) -> Result<u64, StoreError> {
        let sender = self.0.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(run(writer(), receiver));
            sender
        });
        let (done, answer) = oneshot::channel();
        sender.send(Job { rows, done }).await.map_err(|_| gone())?;
        match answer.await.map_err(|_| gone())? {
            Ok(stored) => Ok(stored),
            Err(why) => Err(StoreError::Database {
                operation: "record audit events",
                source: sqlx::Error::Protocol(why),
            }),
        }
    }
}

/// Takes what is waiting (at least one batch, at most [`MAX_GROUP_EVENTS`] events unless one
/// batch alone is larger), writes it in one transaction, answers each caller; until the store
/// is gone.
async fn run(writer: Writer, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut events = first.rows.len();
        let mut jobs = vec![first];
        while events < MAX_GROUP_EVENTS {
            match receiver.try_recv() {
                Ok(job) => {
                    events += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (rows, answers): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.rows, j.done)).unzip();
        match writer.write(rows).await {
            Ok(stored) => {
                for (answer, stored) in answers.into_iter().zip(stored) {
                    let _ = answer.send(Ok(stored));
                }
            }
            Err(error) => {
                tracing::warn!(%error, batches = answers.len(), "cannot record audit events");
                let why = error.to_string();
                for answer in answers {
                    let _ = answer.send(Err(why.clone()));
                }
            }
        }
    }
}

impl Writer {
    /// Writes `batches` in one transaction; answers how many of each were new.
    async fn write(&self, batches: Vec<Vec<EventRow>>) -> Result<Vec<u64>, StoreError> {
        let per_statement = match self.backend {
            Backend::Sqlite(_) => SQLITE_ROWS_PER_STATEMENT,
            Backend::Postgres(_) => ROWS_PER_STATEMENT,
        };
        // Every statement but perhaps a batch's last has the same text (prepared once).
        let full = insert_sql(per_statement);
        write_tx!(self, |tx| {
            let mut counts = Vec::with_capacity(batches.len());
            for batch in batches {
                let mut stored = 0;
                let mut rows = batch.into_iter();
                loop {
                    let chunk: Vec<EventRow> = rows.by_ref().take(per_statement).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let sql = if chunk.len() == per_statement {
                        full.clone()
                    } else {
                        insert_sql(chunk.len())
                    };
                    // Only placeholders are built into the text; every value is bound.
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for row in chunk {
                        query = bind_event_row!(query, row);
                    }
                    stored += query
                        .execute(&mut *tx)
                        .await
                        .op("record audit events")?
                        .rows_affected();
                }
                counts.push(stored);
            }
            counts
        })
    }
}
