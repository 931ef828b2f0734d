//! Access requests, their reviews, and the request rules made through the API.
//!
//! Every change to a request is one transaction that first moves the request's revision where
//! it is in the state the change starts from: on PostgreSQL that update takes the row's lock,
//! on SQLite the transaction holds the write lock from its start, so two reviews of one request
//! (on one replica or several) run one after the other, and exactly one of them can find the
//! quorum reached and make the grant.

use std::time::{Duration, SystemTime};

use infra_api::{RequestState, Verdict};

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};

/// A request as stored, with its reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// The id.
    pub id: i64,
    /// Who asked.
    pub requester: String,
    /// The role.
    pub role: String,
    /// The destination.
    pub destination: String,
    /// The namespace, if one.
    pub namespace: Option<String>,
    /// How long the access lasts.
    pub duration: Duration,
    /// Why.
    pub reason: String,
    /// The rule that covered it.
    pub rule: String,
    /// Distinct approvals needed.
    pub approvals_needed: u32,
    /// The state.
    pub state: RequestState,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it expires undecided.
    pub pending_until: SystemTime,
    /// When its access began.
    pub access_starts: Option<SystemTime>,
    /// When its access ends.
    pub access_ends: Option<SystemTime>,
    /// The grant its approval made.
    pub grant_id: Option<i64>,
    /// Who ended it.
    pub ended_by: Option<String>,
    /// What they said.
    pub end_comment: Option<String>,
    /// The reviews, oldest first.
    pub reviews: Vec<StoredReview>,
    /// The revision.
    pub revision: i64,
}

impl StoredRequest {
    /// `destination` or `destination.namespace`.
    pub fn resource(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}.{ns}", self.destination),
            None => self.destination.clone(),
        }
    }

    fn target(&self) -> String {
        format!(
            "request {} ({} {} on {})",
            self.id,
            self.requester,
            self.role,
            self.resource()
        )
    }
}

/// One review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReview {
    /// Who.
    pub reviewer: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What they said.
    pub comment: String,
    /// When.
    pub at: SystemTime,
}

/// A request to store.
#[derive(Debug, Clone)]
pub struct NewRequestRow<'a> {
    /// Who asks.
    pub requester: &'a str,
    /// The role.
    pub role: &'a str,
    /// The destination.
    pub destination: &'a str,
    /// The namespace, if one.
    pub namespace: Option<&'a str>,
    /// How long.
    pub duration: Duration,
    /// Why.
    pub reason: &'a str,
    /// The covering rule.
    pub rule: &'a str,
    /// Distinct approvals needed.
    pub approvals_needed: u32,
    /// When it expires undecided.
    pub pending_until: SystemTime,
    /// At most this many of the requester's requests may be pending at once.
    pub max_pending: u32,
}

/// What a review did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Recorded; more approvals are needed.
    Recorded(StoredRequest),
    /// The request was decided (approved, its grant made; or denied).
    Decided(StoredRequest),
}

/// What a sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweptRequests {
    /// Pending requests that expired.
    pub expired: Vec<i64>,
    /// Approved requests whose access ran out.
    pub ended: Vec<i64>,
}

macro_rules! request_columns {
    () => {
        "id, requester, role, destination, namespace, duration, reason, rule, approvals_needed, \
         state, created_at, pending_until, access_starts, access_ends, grant_id, ended_by, \
         end_comment, revision"
    };
}

fn state_of(text: &str) -> Result<RequestState, StoreError> {
    RequestState::parse(text).ok_or_else(|| StoreError::InvalidRow {
        what: format!("request state {text:?}"),
    })
}

fn request_from(row: &dyn Columns) -> Result<StoredRequest, StoreError> {
    let namespace = row.text("namespace")?;
    let positive = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(StoredRequest {
        id: row.int("id")?,
        requester: row.text("requester")?,
        role: row.text("role")?,
        destination: row.text("destination")?,
        namespace: (!namespace.is_empty()).then_some(namespace),
        duration: Duration::from_secs(positive(row.int("duration")?)),
        reason: row.text("reason")?,
        rule: row.text("rule")?,
        approvals_needed: u32::try_from(row.int("approvals_needed")?).unwrap_or(u32::MAX),
        state: state_of(&row.text("state")?)?,
        created_at: time(row.int("created_at")?),
        pending_until: time(row.int("pending_until")?),
        access_starts: row.opt_int("access_starts")?.map(time),
        access_ends: row.opt_int("access_ends")?.map(time),
        grant_id: row.opt_int("grant_id")?,
        ended_by: row.opt_text("ended_by")?,
        end_comment: row.opt_text("end_comment")?,
        reviews: Vec::new(),
        revision: row.int("revision")?,
    })
}

fn review_from(row: &dyn Columns) -> Result<StoredReview, StoreError> {
    let verdict = match row.text("verdict")?.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        other => {
            return Err(StoreError::InvalidRow {
                what: format!("review verdict {other:?}"),
            });
        }
    };
    Ok(StoredReview {
        reviewer: row.text("reviewer")?,
        verdict,
        comment: row.text("comment")?,
        at: time(row.int("at")?),
    })
}

/// Which requests a listing wants.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter<'a> {
    /// Only this requester's.
    pub requester: Option<&'a str>,
    /// Only in this state.
    pub state: Option<RequestState>,
}

/// The error for a change that found the request in another state.
fn wrong_state(id: i64, state: Option<RequestState>, wanted: &str) -> StoreError {
    match state {
        None => not_found(format!("request {id}")),
        Some(state) => StoreError::WrongState {
            what: format!("request {id} is {state}; only a {wanted} request can be changed so"),
        },
    }
}

impl Store {
    /// Stores a new pending request, refusing a second pending or approved request of the same
    /// requester for the same role and resource, and more than `max_pending` pending ones.
    pub async fn create_request(
        &self,
        new: &NewRequestRow<'_>,
        now: SystemTime,
    ) -> Result<StoredRequest, StoreError> {
        let at = secs(now);
        let namespace = new.namespace.unwrap_or("");
        let target = format!(
            "request of {} for {} on {}",
            new.requester,
            new.role,
            new.namespace.map_or_else(
                || new.destination.to_owned(),
                |ns| format!("{}.{ns}", new.destination)
            )
        );
        write_tx!(self, at, new.requester, |tx| {
            let open = sqlx::query(
                "SELECT id, state FROM access_requests WHERE requester = $1 AND role = $2 \
                 AND destination = $3 AND namespace = $4 AND state IN ('pending', 'approved')",
            )
            .bind(new.requester)
            .bind(new.role)
            .bind(new.destination)
            .bind(namespace)
            .fetch_optional(&mut *tx)
            .await
            .op("look for an open request")?;
            if let Some(row) = open {
                return Err(StoreError::AlreadyExists {
                    what: format!(
                        "request {} for the same role and resource ({})",
                        row.int("id")?,
                        row.text("state")?
                    ),
                });
            }
            let pending = sqlx::query(
                "SELECT COUNT(*) AS n FROM access_requests WHERE requester = $1 AND state = 'pending'",
            )
            .bind(new.requester)
            .fetch_one(&mut *tx)
            .await
            .op("count pending requests")?
            .int("n")?;
            if pending >= i64::from(new.max_pending) {
                return Err(StoreError::WrongState {
                    what: format!(
                        "{} already has {pending} pending requests, the most allowed; cancel one first",
                        new.requester
                    ),
                });
            }
            let row = sqlx::query(concat!(
                "INSERT INTO access_requests (requester, role, destination, namespace, duration, ",
                "reason, rule, approvals_needed, state, created_at, pending_until) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) RETURNING ",
                request_columns!()
            ))
                .bind(new.requester)
                .bind(new.role)
                .bind(new.destination)
                .bind(namespace)
                .bind(i64::try_from(new.duration.as_secs()).unwrap_or(i64::MAX))
                .bind(new.reason)
                .bind(new.rule)
                .bind(i64::from(new.approvals_needed))
                .bind(at)
                .bind(secs(new.pending_until))
                .fetch_one(&mut *tx)
                .await
                .op("create a request")?;
            let request = request_from(&row)?;
            let entry = Entry::new("request.create", request.target()).detail(format!(
                "for {}s, rule {:?}, reason {:?}",
                new.duration.as_secs(),
                new.rule,
                new.reason
            ));
            (request, entry)
        })
        .map_err(|e| match e {
            StoreError::AlreadyExists { what } => StoreError::AlreadyExists {
                what: format!("{target}: {what}"),
            },
            other => other,
        })
    }

    /// The request `id` with its reviews.
    pub async fn get_request(&self, id: i64) -> Result<StoredRequest, StoreError> {
        let mut found = self.requests_where(Some(id), None).await?;
        found
            .pop()
            .ok_or_else(|| not_found(format!("request {id}")))
    }

    /// Requests, newest first, with their reviews.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter<'_>,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        let mut all = self.requests_where(None, filter.requester).await?;
        if let Some(state) = filter.state {
            all.retain(|r| r.state == state);
        }
        Ok(all)
    }

    async fn requests_where(
        &self,
        id: Option<i64>,
        requester: Option<&str>,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        let (sql, reviews_sql) = match (id, requester) {
            (Some(_), _) => (
                concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM access_requests WHERE id = $1"
                ),
                "SELECT request_id, reviewer, verdict, comment, at FROM request_reviews \
                 WHERE request_id = $1 ORDER BY at, reviewer",
            ),
            (None, Some(_)) => (
                concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM access_requests WHERE requester = $1 ORDER BY id DESC"
                ),
                "SELECT r.request_id, r.reviewer, r.verdict, r.comment, r.at FROM request_reviews r \
                 JOIN access_requests a ON a.id = r.request_id WHERE a.requester = $1 \
                 ORDER BY r.at, r.reviewer",
            ),
            (None, None) => (
                concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM access_requests ORDER BY id DESC"
                ),
                "SELECT request_id, reviewer, verdict, comment, at FROM request_reviews \
                 ORDER BY at, reviewer",
            ),
        };
        with_db!(self, |pool, _begin| {
            let mut query = sqlx::query(sql);
            let mut reviews_query = sqlx::query(reviews_sql);
            if let Some(id) = id {
                query = query.bind(id);
                reviews_query = reviews_query.bind(id);
            } else if let Some(requester) = requester {
                query = query.bind(requester.to_owned());
                reviews_query = reviews_query.bind(requester.to_owned());
            }
            let mut requests: Vec<StoredRequest> = query
                .fetch_all(pool)
                .await
                .op("list requests")?
                .iter()
                .map(|r| request_from(r))
                .collect::<Result<_, _>>()?;
            let index: std::collections::HashMap<i64, usize> = requests
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id, i))
                .collect();
            for row in reviews_query.fetch_all(pool).await.op("list reviews")? {
                let request_id = row.int("request_id")?;
                if let Some(&i) = index.get(&request_id) {
                    requests[i].reviews.push(review_from(&row)?);
                }
            }
            Ok(requests)
        })
    }

    /// Records `reviewer`'s verdict on the pending request `id`. A denial ends the request; an
    /// approval that brings the distinct approvals to the number needed approves it and makes
    /// its grant (to the requester, expiring after the request's duration), all in one
    /// transaction. A reviewer reviews a request once. A `decisive` approval (the on-call
    /// person's) approves whatever the count.
    pub async fn review_request(
        &self,
        reviewer: &str,
        id: i64,
        verdict: Verdict,
        comment: &str,
        decisive: bool,
        now: SystemTime,
    ) -> Result<RequestOutcome, StoreError> {
        let at = secs(now);
        let outcome: Result<bool, StoreError> = write_tx!(self, at, reviewer, |tx| {
            // The lock: only a pending request that has not run out moves on.
            let locked = sqlx::query(
                "UPDATE access_requests SET revision = revision + 1 \
                 WHERE id = $1 AND state = 'pending' AND pending_until > $2 RETURNING id",
            )
            .bind(id)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("lock a request")?;
            if locked.is_none() {
                let state =
                    sqlx::query("SELECT state, pending_until FROM access_requests WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .op("read a request's state")?;
                return Err(match state {
                    Some(row) if row.text("state")? == "pending" => StoreError::WrongState {
                        what: format!("request {id} has expired undecided"),
                    },
                    Some(row) => wrong_state(id, Some(state_of(&row.text("state")?)?), "pending"),
                    None => not_found(format!("request {id}")),
                });
            }
            let inserted = sqlx::query(
                "INSERT INTO request_reviews (request_id, reviewer, verdict, comment, at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id, reviewer) DO NOTHING",
            )
            .bind(id)
            .bind(reviewer)
            .bind(verdict.as_str())
            .bind(comment)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("record a review")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("a review of request {id} by {reviewer}"),
                });
            }
            let request = request_from(
                &sqlx::query(concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM access_requests WHERE id = $1"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .op("read a request")?,
            )?;
            let target = request.target();
            match verdict {
                Verdict::Deny => {
                    sqlx::query("UPDATE access_requests SET state = 'denied' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .op("deny a request")?;
                    let entry = Entry::new("request.deny", target).detail(format!("{comment:?}"));
                    (true, entry)
                }
                Verdict::Approve => {
                    let approvals = sqlx::query(
                        "SELECT COUNT(*) AS n FROM request_reviews WHERE request_id = $1 AND verdict = 'approve'",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .op("count approvals")?
                    .int("n")?;
                    if !decisive && approvals < i64::from(request.approvals_needed) {
                        let entry = Entry::new("request.review", target).detail(format!(
                            "approved ({approvals} of {}) {comment:?}",
                            request.approvals_needed
                        ));
                        (false, entry)
                    } else {
                        let namespace = request.namespace.as_deref().unwrap_or("");
                        let ends = at.saturating_add(
                            i64::try_from(request.duration.as_secs()).unwrap_or(i64::MAX),
                        );
                        // A lapsed grant not yet purged would stand in the way of the new one.
                        sqlx::query(
                            "DELETE FROM grants WHERE subject_kind = 'user' AND subject_name = $1 \
                             AND role = $2 AND destination = $3 AND namespace = $4 \
                             AND expires_at IS NOT NULL AND expires_at <= $5",
                        )
                        .bind(request.requester.as_str())
                        .bind(request.role.as_str())
                        .bind(request.destination.as_str())
                        .bind(namespace)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .op("clear a lapsed grant")?;
                        let grant = sqlx::query(
                            "INSERT INTO grants (subject_kind, subject_name, role, destination, \
                             namespace, expires_at, created_at, created_by, updated_at) \
                             VALUES ('user', $1, $2, $3, $4, $5, $6, $7, $6) \
                             ON CONFLICT (subject_kind, subject_name, role, destination, namespace) \
                             DO NOTHING RETURNING id",
                        )
                        .bind(request.requester.as_str())
                        .bind(request.role.as_str())
                        .bind(request.destination.as_str())
                        .bind(namespace)
                        .bind(ends)
                        .bind(at)
                        .bind(format!("request {id}"))
                        .fetch_optional(&mut *tx)
                        .await
                        .op("make a request's grant")?;
                        let Some(grant) = grant else {
                            return Err(StoreError::AlreadyExists {
                                what: format!(
                                    "a grant of {} {} on {} (made another way), so request {id}",
                                    request.requester,
                                    request.role,
                                    request.resource()
                                ),
                            });
                        };
                        let grant_id = grant.int("id")?;
                        sqlx::query(
                            "UPDATE access_requests SET state = 'approved', access_starts = $2, \
                             access_ends = $3, grant_id = $4 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(at)
                        .bind(ends)
                        .bind(grant_id)
                        .execute(&mut *tx)
                        .await
                        .op("approve a request")?;
                        let entry = Entry::new("request.approve", target)
                            .detail(format!("grant {grant_id} until {ends}; {comment:?}"));
                        (true, entry)
                    }
                }
            }
        });
        let request = self.get_request(id).await?;
        Ok(if outcome? {
            RequestOutcome::Decided(request)
        } else {
            RequestOutcome::Recorded(request)
        })
    }

    /// Ends request `id` by `actor`: a pending one is cancelled, an approved one ended (its
    /// grant deleted in the same transaction). `from` is the state the caller means to end.
    pub async fn end_request(
        &self,
        actor: &str,
        id: i64,
        from: RequestState,
        comment: &str,
        now: SystemTime,
    ) -> Result<StoredRequest, StoreError> {
        let at = secs(now);
        let (to, action) = match from {
            RequestState::Pending => ("cancelled", "request.cancel"),
            RequestState::Approved => ("ended", "request.revoke"),
            other => return Err(wrong_state(id, Some(other), "pending or approved")),
        };
        write_tx!(self, at, actor, |tx| {
            let row = sqlx::query(concat!(
                "UPDATE access_requests SET state = $3, ended_by = $4, end_comment = $5, ",
                "revision = revision + 1, ",
                "access_ends = CASE WHEN state = 'approved' THEN $6 ELSE access_ends END ",
                "WHERE id = $1 AND state = $2 RETURNING ",
                request_columns!()
            ))
            .bind(id)
            .bind(from.as_str())
            .bind(to)
            .bind(actor)
            .bind(comment)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("end a request")?;
            let Some(row) = row else {
                let state = sqlx::query("SELECT state FROM access_requests WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .op("read a request's state")?
                    .map(|r| r.text("state"))
                    .transpose()?
                    .map(|s| state_of(&s))
                    .transpose()?;
                return Err(wrong_state(id, state, from.as_str()));
            };
            let request = request_from(&row)?;
            if let Some(grant) = request.grant_id {
                sqlx::query("DELETE FROM grants WHERE id = $1")
                    .bind(grant)
                    .execute(&mut *tx)
                    .await
                    .op("delete a request's grant")?;
            }
            let entry = Entry::new(action, request.target()).detail(format!("{comment:?}"));
            (request, entry)
        })
    }

    /// Expires the pending requests whose time ran out, and ends the approved ones whose access
    /// did (their grants have lapsed; the purge removes them). Each change is made once, by
    /// whichever replica's sweep gets it.
    pub async fn sweep_requests(&self, now: SystemTime) -> Result<SweptRequests, StoreError> {
        let at = secs(now);
        // Most sweeps find nothing: a read first, so they do not take the write lock.
        let due = with_db!(self, |pool, _begin| {
            sqlx::query(
                "SELECT id FROM access_requests WHERE (state = 'pending' AND pending_until <= $1) \
                 OR (state = 'approved' AND access_ends <= $1) LIMIT 1",
            )
            .bind(at)
            .fetch_optional(pool)
            .await
            .op("look for requests due")?
            .is_some()
        });
        if !due {
            return Ok(SweptRequests::default());
        }
        write_tx!(self, at, "infra", |tx| {
            let expired: Vec<i64> = sqlx::query(
                "UPDATE access_requests SET state = 'expired', revision = revision + 1 \
                 WHERE state = 'pending' AND pending_until <= $1 RETURNING id",
            )
            .bind(at)
            .fetch_all(&mut *tx)
            .await
            .op("expire requests")?
            .iter()
            .map(|r| r.int("id"))
            .collect::<Result<_, _>>()?;
            let ended: Vec<i64> = sqlx::query(
                "UPDATE access_requests SET state = 'ended', ended_by = 'infra', \
                 end_comment = 'its time ran out', revision = revision + 1 \
                 WHERE state = 'approved' AND access_ends <= $1 RETURNING id",
            )
            .bind(at)
            .fetch_all(&mut *tx)
            .await
            .op("end requests")?
            .iter()
            .map(|r| r.int("id"))
            .collect::<Result<_, _>>()?;
            let entry = (!expired.is_empty() || !ended.is_empty()).then(|| {
                Entry::new("request.sweep", String::new())
                    .detail(format!("expired: {expired:?}, ended: {ended:?}"))
            });
            (SweptRequests { expired, ended }, entry)
        })
    }

    /// The approved request that owns grant `grant_id`, if one does.
    pub async fn request_of_grant(&self, grant_id: i64) -> Result<Option<i64>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query("SELECT id FROM access_requests WHERE grant_id = $1 AND state = 'approved'")
                .bind(grant_id)
                .fetch_optional(pool)
                .await
                .op("find a grant's request")?
                .map(|r| r.int("id"))
                .transpose()
        })
    }

    /// Grant id → the approved request that owns it.
    pub async fn requests_by_grant(
        &self,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "SELECT id, grant_id FROM access_requests WHERE state = 'approved' AND grant_id IS NOT NULL",
            )
            .fetch_all(pool)
            .await
            .op("list the grants of requests")?
            .iter()
            .map(|r| Ok((r.int("grant_id")?, r.int("id")?)))
            .collect()
        })
    }
}
