//! [`Store`] for [`HttpStore`]: each operation as its route, checked locally first where
//! a URL could not carry the request, paged where the server's page limit is lower.

use crate::request::Resend;
use crate::urls::{addressable, list};
use crate::{HttpStore, POLL_FIRST, POLL_MAX};
use annal_core::append::check_name;
use annal_core::lease;
use annal_core::wire::{
    AcquireBody, CheckpointList, EventsPage, Head, HeartbeatBody, HeldBody, Lease, LeaseList,
    MemberList, SnapshotBody, StreamPage,
};
use annal_core::{
    AggregateInfo, AppendRequest, AppendResult, Checkpoint, CheckpointWrite, Direction, Error,
    EventCounts, Filter, Limits, NewEvent, ProposedTransaction, RawJson, RecordedEvent, Result,
    Snapshot, Store, Transaction, TransactionResult, Uuid, VerifyReport,
};
use async_trait::async_trait;
use reqwest::Method;
use std::time::Duration;
use tokio::time::Instant;

/// A ttl in whole milliseconds, rounded up (a ttl below 1 ms is refused before).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Whether every event of every append carries an event_id and no checkpoint
/// compare-and-set rides along: then sending it twice writes it once.
fn replay_safe(appends: &[AppendRequest], checkpoint: Option<&CheckpointWrite>) -> Resend {
    let ids = appends
        .iter()
        .all(|a| a.events.iter().all(|e| e.event_id.is_some()));
    let cas = checkpoint.is_some_and(|c| c.expected_position.is_some());
    if ids && !cas {
        Resend::Safe
    } else {
        Resend::IfNotSent
    }
}

/// A prepared transaction as the request that reproduces it exactly: every default
/// applied, every event_id set.
fn to_transaction(proposed: ProposedTransaction) -> Transaction {
    let appends = proposed
        .appends
        .into_iter()
        .map(|a| AppendRequest {
            aggregate_type: a.aggregate_type,
            aggregate_id: a.aggregate_id,
            expected_version: a.expected,
            user_id: None,
            correlation_id: None,
            causation_id: None,
            events: a
                .events
                .into_iter()
                .map(|e| NewEvent {
                    event_id: Some(e.event_id),
                    event_type: e.event_type,
                    event_version: Some(e.event_version),
                    user_id: Some(e.user_id),
                    correlation_id: e.correlation_id,
                    causation_id: e.causation_id,
                    metadata: Some(e.metadata),
                    data: e.data,
                    subjects: e
                        .personal
                        .as_ref()
                        .map(|p| p.subjects.clone())
                        .unwrap_or_default(),
                    personal: e.personal.map(|p| p.plain),
                })
                .collect(),
            // Never sent: the server records who its credentials say.
            principal: None,
        })
        .collect();
    Transaction {
        appends,
        checkpoint: proposed.checkpoint,
    }
}

#[async_trait]
impl Store for HttpStore {
    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// `POST /v1/transactions` with every event_id set, so a retry is a replay.
    async fn commit(&self, proposed: ProposedTransaction) -> Result<TransactionResult> {
        let transaction = to_transaction(proposed);
        let resend = replay_safe(&transaction.appends, transaction.checkpoint.as_ref());
        let url = self.url(&["v1", "transactions"]);
        self.send(Method::POST, url, &transaction, resend).await
    }

    /// `POST /v1/transactions`, validated by the server with its own limits.
    async fn transact(&self, transaction: Transaction) -> Result<TransactionResult> {
        let resend = replay_safe(&transaction.appends, transaction.checkpoint.as_ref());
        let url = self.url(&["v1", "transactions"]);
        self.send(Method::POST, url, &transaction, resend).await
    }

    /// `POST /v1/streams/{aggregate_id}`: error fields are those of a local append
    /// (`events[3].metadata`, not `appends[0].…`).
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        // The id goes in the route: an empty or invalid one must fail as locally.
        check_name("aggregate_type", &request.aggregate_type)?;
        check_name("aggregate_id", &request.aggregate_id)?;
        addressable("aggregate_id", &request.aggregate_id)?;
        let resend = replay_safe(std::slice::from_ref(&request), None);
        let url = self.url(&["v1", "streams", &request.aggregate_id]);
        self.send(Method::POST, url, &request, resend).await
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut out = Vec::new();
        let mut from = from_version;
        while out.len() < limit {
            let want = self.page_for(limit - out.len());
            let mut url = self.url(&["v1", "streams", aggregate_id]);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair(
                    "direction",
                    match direction {
                        Direction::Forward => "forward",
                        Direction::Backward => "backward",
                    },
                );
                q.append_pair("limit", &want.to_string());
                if let Some(v) = from {
                    q.append_pair("from_version", &v.to_string());
                }
            }
            // 404: no such aggregate, which reads as no events.
            let page = match self.get_opt::<StreamPage>(url).await {
                Err(e) if self.smaller_page(&e, want) => continue,
                answer => answer?,
            };
            let Some(page) = page else {
                break;
            };
            let got = page.events.len();
            out.extend(page.events);
            match page.next_from_version {
                Some(next) if got > 0 => from = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.pages(
            limit,
            after_position,
            |want, after| self.filtered_url(&["events"], *after, Some(want), filter),
            |page: EventsPage| (page.events, page.next_after_position),
        )
        .await
    }

    /// `GET /v1/events/counts`: the server counts in one query.
    async fn count_by_type(
        &self,
        after_position: u64,
        up_to: Option<u64>,
        filter: &Filter,
    ) -> Result<EventCounts> {
        let mut url = self.filtered_url(&["events", "counts"], after_position, None, filter)?;
        if let Some(up_to) = up_to {
            url.query_pairs_mut()
                .append_pair("up_to_position", &up_to.to_string());
        }
        self.get(url, self.inner.timeout).await
    }

    async fn event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let url = self.url(&["v1", "events", &event_id.to_string()]);
        self.get_opt(url).await
    }

    /// The stream route read backward, one event: its type and version.
    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<AggregateInfo>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut url = self.url(&["v1", "streams", aggregate_id]);
        url.query_pairs_mut()
            .append_pair("direction", "backward")
            .append_pair("limit", "1");
        let page = self.get_opt::<StreamPage>(url).await?;
        Ok(page
            .and_then(|p| p.events.into_iter().next())
            .map(|e| AggregateInfo {
                aggregate_type: e.aggregate_type,
                version: e.aggregate_version,
            }))
    }

    async fn head(&self, aggregate_types: &[String]) -> Result<u64> {
        let mut url = self.url(&["v1", "head"]);
        if !aggregate_types.is_empty() {
            let types = list("aggregate_type", aggregate_types)?;
            url.query_pairs_mut().append_pair("aggregate_type", &types);
        }
        let head: Head = self.get(url, self.inner.timeout).await?;
        Ok(head.position)
    }

    async fn save_snapshot(
        &self,
        aggregate_id: &str,
        version: u64,
        tag: &str,
        state: RawJson,
    ) -> Result<Snapshot> {
        addressable("aggregate_id", aggregate_id)?;
        let url = self.url(&[
            "v1",
            "streams",
            aggregate_id,
            "snapshots",
            &version.to_string(),
        ]);
        let body = SnapshotBody {
            tag: tag.to_owned(),
            state,
        };
        self.send(Method::PUT, url, &body, Resend::Safe).await
    }

    async fn load_snapshot(
        &self,
        aggregate_id: &str,
        tag: &str,
        at_or_below: Option<u64>,
    ) -> Result<Option<Snapshot>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut url = self.url(&["v1", "streams", aggregate_id, "snapshots", "latest"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("tag", tag);
            if let Some(v) = at_or_below {
                q.append_pair("at_or_below", &v.to_string());
            }
        }
        self.get_opt(url).await
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        addressable("name", name)?;
        self.get_opt(self.url(&["v1", "checkpoints", name])).await
    }

    /// `GET /v1/checkpoints`.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let list: CheckpointList = self
            .get(self.url(&["v1", "checkpoints"]), self.inner.timeout)
            .await?;
        Ok(list.checkpoints)
    }

    /// `POST /v1/subjects/{subject}/forget` (forgetting twice answers the first
    /// forgetting, so a resend is safe).
    async fn forget_subject(
        &self,
        request: annal_core::privacy::ForgetRequest,
    ) -> Result<annal_core::privacy::Forgotten> {
        request.check()?;
        addressable("subject", &request.subject)?;
        let url = self.url(&["v1", "subjects", &request.subject, "forget"]);
        let body = annal_core::wire::ForgetBody {
            reason: request.reason,
        };
        self.send(Method::POST, url, &body, Resend::Safe).await
    }

    /// `GET /v1/subjects`.
    async fn subjects(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<annal_core::privacy::SubjectInfo>> {
        self.pages(
            limit,
            after.to_owned(),
            |want, after| {
                let mut url = self.url(&["v1", "subjects"]);
                url.query_pairs_mut()
                    .append_pair("after", after)
                    .append_pair("limit", &want.to_string());
                Ok(url)
            },
            |list: annal_core::wire::SubjectList| (list.subjects, list.next_after),
        )
        .await
    }

    /// `GET /v1/subjects/{subject}`.
    async fn subject(&self, subject: &str) -> Result<Option<annal_core::privacy::SubjectInfo>> {
        addressable("subject", subject)?;
        self.get_opt(self.url(&["v1", "subjects", subject])).await
    }

    /// `GET /v1/subjects/{subject}/events`.
    async fn subject_events(
        &self,
        subject: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        addressable("subject", subject)?;
        self.pages(
            limit,
            after_position,
            |want, after| {
                let mut url = self.url(&["v1", "subjects", subject, "events"]);
                url.query_pairs_mut()
                    .append_pair("after_position", &after.to_string())
                    .append_pair("limit", &want.to_string());
                Ok(url)
            },
            |page: annal_core::wire::EventsPage| (page.events, page.next_after_position),
        )
        .await
    }

    /// `PUT /v1/checkpoints/{name}`.
    async fn put_checkpoint(&self, write: CheckpointWrite) -> Result<Checkpoint> {
        write.validate("")?;
        addressable("name", &write.name)?;
        let resend = if write.expected_position.is_some() {
            Resend::IfNotSent
        } else {
            Resend::Safe
        };
        let url = self.url(&["v1", "checkpoints", &write.name]);
        self.send(Method::PUT, url, &write, resend).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/acquire`; a `lease_conflict` is `None`.
    async fn acquire_lease(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        lease::check_request(group, owner, ttl, false)?;
        addressable("group", group)?;
        let url = self.url(&[
            "v1",
            "groups",
            group,
            "leases",
            &partition.to_string(),
            "acquire",
        ]);
        let body = AcquireBody {
            owner: owner.to_owned(),
            ttl_ms: ttl_ms(ttl),
        };
        // Not resent once sent: a second acquisition would not see that the first won.
        self.lease_call(url, &body, Resend::IfNotSent).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/renew`; a `lease_conflict` is `None`.
    async fn renew_lease(&self, held: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        lease::check_request(&held.group, &held.owner, ttl, false)?;
        addressable("group", &held.group)?;
        let url = self.url(&[
            "v1",
            "groups",
            &held.group,
            "leases",
            &held.partition.to_string(),
            "renew",
        ]);
        let body = HeldBody {
            owner: held.owner.clone(),
            token: held.token,
            ttl_ms: Some(ttl_ms(ttl)),
        };
        self.lease_call(url, &body, Resend::Safe).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/release`; a `lease_conflict` is `false`.
    async fn release_lease(&self, held: &Lease) -> Result<bool> {
        lease::check_request(&held.group, &held.owner, Duration::ZERO, true)?;
        addressable("group", &held.group)?;
        let url = self.url(&[
            "v1",
            "groups",
            &held.group,
            "leases",
            &held.partition.to_string(),
            "release",
        ]);
        let body = HeldBody {
            owner: held.owner.clone(),
            token: held.token,
            ttl_ms: None,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::invalid("body", format!("cannot be written as JSON: {e}")))?;
        let timeout = self.inner.timeout;
        self.call(
            Method::POST,
            url,
            Some(body),
            Resend::Safe,
            timeout,
            |s, b, n| {
                if s == reqwest::StatusCode::NO_CONTENT {
                    return Ok(true);
                }
                match self.parse::<serde::de::IgnoredAny>(s, b, n) {
                    Err(Error::LeaseConflict { .. }) => Ok(false),
                    Err(e) => Err(e),
                    Ok(_) => Ok(true),
                }
            },
        )
        .await
    }

    /// `GET /v1/groups/{group}/leases`.
    async fn leases(&self, group: &str) -> Result<Vec<Lease>> {
        check_name("group", group)?;
        addressable("group", group)?;
        let list: LeaseList = self
            .get(
                self.url(&["v1", "groups", group, "leases"]),
                self.inner.timeout,
            )
            .await?;
        Ok(list.leases)
    }

    /// `PUT /v1/groups/{group}/members/{member}`.
    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        lease::check_request(group, member, ttl, true)?;
        addressable("group", group)?;
        addressable("member", member)?;
        let url = self.url(&["v1", "groups", group, "members", member]);
        let body = HeartbeatBody {
            ttl_ms: ttl_ms(ttl),
        };
        let list: MemberList = self.send(Method::PUT, url, &body, Resend::Safe).await?;
        Ok(list.members)
    }

    /// Polls `GET /v1/head`, 5 ms after the first look and then at most every 50 ms,
    /// until the head passes `after_position` or `timeout` has passed.
    async fn wait_for_head(&self, after_position: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        loop {
            let head = self.head(&[]).await?;
            let now = Instant::now();
            if head > after_position || now >= deadline {
                return Ok(head);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// `GET /v1/verify`: the server checks the chain next to its data.
    async fn verify(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
    ) -> Result<VerifyReport> {
        self.verify_on_server(from_position, to_position, false)
            .await
    }

    /// `GET /v1/verify?deep=true`: the server also runs its store's own checks.
    async fn verify_deep(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
    ) -> Result<VerifyReport> {
        self.verify_on_server(from_position, to_position, true)
            .await
    }
}

impl HttpStore {
    async fn verify_on_server(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
        deep: bool,
    ) -> Result<VerifyReport> {
        let mut url = self.url(&["v1", "verify"]);
        if from_position.is_some() || to_position.is_some() || deep {
            let mut q = url.query_pairs_mut();
            if let Some(p) = from_position {
                q.append_pair("from_position", &p.to_string());
            }
            if let Some(p) = to_position {
                q.append_pair("to_position", &p.to_string());
            }
            if deep {
                q.append_pair("deep", "true");
            }
        }
        self.get(url, self.inner.verify_timeout).await
    }
}
