//! Audit events: every decision that matters is one structured JSON line on
//! stdout (Cloud Logging reads `severity` and `message`) and, once
//! [`Audit::persist`] is on, the same JSON in the store, where the events of
//! every instance form one ordered record (issue 5; a later issue
//! hash-chains it).
//!
//! Storing never delays the request that caused the event: [`Audit::record`]
//! only appends to an in-memory queue, and one writer task per instance
//! stores the queue in batches (one transaction each). While the store is
//! down the queue waits and the writer retries; the line on stdout is
//! written at once either way. The queue is bounded ([`PENDING_MAX`]): past
//! that, the oldest waiting events are dropped from the queue (they remain
//! in the log) and the gap is itself recorded as an `audit_events_dropped`
//! event when the store is back.

use crate::store::{AuditEntry, DynStore};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

/// Events that may wait in memory for the store (about 1 KiB each).
pub const PENDING_MAX: usize = 100_000;
/// Events stored per transaction.
const BATCH: usize = 500;
/// Pause between attempts while the store fails.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Deny,
}

/// One audit event (PRODUCT.md §6 fields).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditEvent {
    pub event: &'static str,
    pub outcome: Option<Outcome>,
    /// Who acted, for lifecycle and admin events: a subject, or `cli`.
    /// `subject`, `email` and `credential` then describe the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What was acted on, for people: `user u_…`, `key DIGEST`,
    /// `invite 1a2b3c4d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The change itself, when the event name does not say it all (a role
    /// name, how a key was added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl AuditEvent {
    pub fn new(event: &'static str, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            event,
            outcome: Some(outcome),
            ..Default::default()
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    severity: &'static str,
    message: String,
    log_type: &'static str,
    instance: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// The audit trail of one process. Cheap to share: clones write to the
/// same stream and queue.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    sink: Sink,
    /// Tests read the events back (see [`Audit::capture`]).
    captured: Mutex<Option<Vec<AuditEvent>>>,
    /// Present once [`Audit::persist`] is on.
    pending: OnceLock<Pending>,
}

/// Events waiting for the store, oldest first.
struct Pending {
    queue: Mutex<VecDeque<AuditEntry>>,
    wake: tokio::sync::Notify,
    /// Taken by the writer and not yet acknowledged by the store.
    in_flight: AtomicUsize,
    /// Dropped from a full queue since the last report.
    dropped: AtomicU64,
    /// Tells this trail's events apart from every other's: the process
    /// tag and a per-process count of trails (tests run several in one
    /// process; admin CLI runs share the instance name `cli`).
    prefix: String,
    /// Numbers this trail's events (`prefix.n`).
    next: AtomicU64,
    /// At most this many wait ([`PENDING_MAX`]; smaller in tests).
    cap: usize,
}

/// Where the JSON lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Stdout,
    /// The admin CLI: its stdout is its answer (`--json` for scripts).
    Stderr,
    /// Unit tests of this module: nothing printed.
    #[cfg(test)]
    Nowhere,
}

fn outcome_name(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Success) => "success",
        Some(Outcome::Failure) => "failure",
        Some(Outcome::Deny) => "deny",
        None => "",
    }
}

impl Audit {
    pub fn new(instance: String) -> Audit {
        Audit::with_sink(instance, Sink::Stdout)
    }

    /// For the admin CLI: the same lines, on stderr.
    pub fn to_stderr(instance: String) -> Audit {
        Audit::with_sink(instance, Sink::Stderr)
    }

    fn with_sink(instance: String, sink: Sink) -> Audit {
        Audit {
            inner: Arc::new(Inner {
                instance,
                sink,
                captured: Mutex::new(None),
                pending: OnceLock::new(),
            }),
        }
    }

    /// Keep a copy of every event from now on (tests).
    pub fn capture(&self) {
        let mut c = self
            .inner
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.get_or_insert_with(Vec::new);
    }

    /// The events kept since [`Audit::capture`].
    pub fn captured(&self) -> Vec<AuditEvent> {
        self.inner
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Write the event as one JSON line, and queue it for the store when
    /// [`Audit::persist`] is on.
    pub fn record(&self, event: AuditEvent) {
        let inner = &*self.inner;
        let outcome = outcome_name(event.outcome);
        let message = match &event.reason {
            Some(r) => format!("{} {}: {}", event.event, outcome, r),
            None => format!("{} {}", event.event, outcome),
        };
        let now = SystemTime::now();
        let line = Line {
            time: humantime::format_rfc3339_millis(now).to_string(),
            severity: if event.outcome == Some(Outcome::Success) {
                "NOTICE"
            } else {
                "WARNING"
            },
            message,
            log_type: "audit",
            instance: &inner.instance,
            event: &event,
        };
        if let Ok(mut json) = serde_json::to_vec(&line) {
            json.push(b'\n');
            // One write call per line so concurrent events never interleave.
            let _ = match inner.sink {
                Sink::Stdout => std::io::stdout().lock().write_all(&json),
                Sink::Stderr => std::io::stderr().lock().write_all(&json),
                #[cfg(test)]
                Sink::Nowhere => Ok(()),
            };
            if let Some(p) = inner.pending.get() {
                json.pop();
                let n = p.next.fetch_add(1, Ordering::Relaxed) + 1;
                let entry = AuditEntry {
                    seq: 0,
                    id: format!("{}.{n}", p.prefix),
                    time_ms: now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    instance: inner.instance.clone(),
                    event: event.event.to_owned(),
                    outcome: outcome.to_owned(),
                    subject: event.subject.clone(),
                    record: String::from_utf8(json).unwrap_or_default(),
                };
                p.push(entry);
            }
        }
        if let Some(events) = inner
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            events.push(event);
        }
    }

    /// Store every event recorded from now on in `store`, from a writer
    /// task on the current runtime (see the module comment). The task ends
    /// when the last clone of this `Audit` is dropped.
    pub fn persist(&self, store: DynStore) {
        self.persist_with_cap(store, PENDING_MAX);
    }

    fn persist_with_cap(&self, store: DynStore, cap: usize) {
        static TRAILS: AtomicU64 = AtomicU64::new(0);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pending = Pending {
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            in_flight: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            prefix: format!(
                "{}.{}",
                crate::server::instance_tag(),
                TRAILS.fetch_add(1, Ordering::Relaxed) + 1
            ),
            next: AtomicU64::new(0),
            cap,
        };
        if self.inner.pending.set(pending).is_err() {
            return; // already on
        }
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(write_events(weak, store));
    }

    /// Events recorded but not yet acknowledged by the store.
    pub fn waiting(&self) -> usize {
        self.inner.pending.get().map_or(0, |p| {
            p.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
                + p.in_flight.load(Ordering::Acquire)
        })
    }

    /// Wait (at most `limit`) until every event recorded so far is stored.
    /// `true` when nothing is left waiting. Called at shutdown.
    pub async fn flush(&self, limit: Duration) -> bool {
        let Some(p) = self.inner.pending.get() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.waiting() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            p.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Pending {
    fn push(&self, entry: AuditEntry) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.cap {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(entry);
        }
        self.wake.notify_one();
    }

    /// Take the next batch, oldest first.
    fn take(&self) -> Vec<AuditEntry> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(BATCH);
        self.in_flight.store(n, Ordering::Release);
        q.drain(..n).collect()
    }

    /// Put a batch the store refused back in front, still bounded.
    fn give_back(&self, batch: Vec<AuditEntry>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for e in batch.into_iter().rev() {
            q.push_front(e);
        }
        while q.len() > self.cap {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight.store(0, Ordering::Release);
    }
}

/// The writer task: store waiting events in batches; on failure keep them
/// and retry every [`RETRY_EVERY`]; log an outage once when it starts and
/// once when it ends.
async fn write_events(audit: Weak<Inner>, store: DynStore) {
    let mut failing = false;
    loop {
        let Some(inner) = audit.upgrade() else { return };
        let Some(p) = inner.pending.get() else { return };
        let batch = p.take();
        if batch.is_empty() {
            // Wake on the next event, or now and then to notice the end.
            let _ = tokio::time::timeout(Duration::from_secs(1), p.wake.notified()).await;
            continue;
        }
        let n = batch.len();
        match store.append_audit(&batch).await {
            Ok(()) => {
                p.in_flight.store(0, Ordering::Release);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("audit events are being stored again");
                }
                let dropped = p.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let audit = Audit {
                        inner: inner.clone(),
                    };
                    audit.record(AuditEvent {
                        reason: Some(format!(
                            "{dropped} audit events could not be stored: the store was \
                             unavailable while more than {PENDING_MAX} waited; they are in \
                             this instance's log"
                        )),
                        ..AuditEvent::new("audit_events_dropped", Outcome::Failure)
                    });
                }
            }
            Err(e) => {
                p.give_back(batch);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        error = %e,
                        waiting = n,
                        "cannot store audit events; keeping them in memory and retrying every second"
                    );
                }
                drop(inner);
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn quiet(instance: &str) -> Audit {
        Audit::with_sink(instance.into(), Sink::Nowhere)
    }

    fn login(n: usize) -> AuditEvent {
        AuditEvent {
            subject: Some(format!("u_{n}")),
            reason: Some(format!("attempt {n}")),
            ..AuditEvent::new("login", Outcome::Failure)
        }
    }

    #[tokio::test]
    async fn recorded_events_are_stored_in_order_with_the_logged_json() {
        let store: DynStore = Arc::new(SqliteStore::memory().await.unwrap());
        let audit = quiet("test-instance");
        audit.persist(store.clone());
        for n in 0..1_200 {
            audit.record(login(n));
        }
        assert!(audit.flush(Duration::from_secs(10)).await);
        assert_eq!(audit.waiting(), 0);
        let stored = store.audit_since(0, 2_000).await.unwrap();
        assert_eq!(stored.len(), 1_200, "three batches, nothing lost");
        for (n, e) in stored.iter().enumerate() {
            assert_eq!(e.seq, n as u64 + 1);
            assert_eq!(e.subject.as_deref(), Some(format!("u_{n}").as_str()));
            assert_eq!((e.event.as_str(), e.outcome.as_str()), ("login", "failure"));
            assert_eq!(e.instance, "test-instance");
            let json: serde_json::Value = serde_json::from_str(&e.record).unwrap();
            assert_eq!(json["reason"], format!("attempt {n}"));
            assert_eq!(json["log_type"], "audit");
        }
    }

    #[tokio::test]
    async fn events_wait_while_the_store_is_down_and_a_full_queue_records_its_gap() {
        let down = SqliteStore::memory().await.unwrap();
        down.close().await;
        let audit = quiet("t");
        audit.persist_with_cap(Arc::new(down), 5);
        for n in 0..8 {
            audit.record(login(n));
        }
        assert!(!audit.flush(Duration::from_millis(300)).await);
        assert_eq!(audit.waiting(), 5, "bounded: the oldest three were dropped");
        let p = audit.inner.pending.get().unwrap();
        assert_eq!(p.dropped.load(Ordering::Relaxed), 3);
        let kept: Vec<_> = p
            .queue
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.subject.clone().unwrap())
            .collect();
        assert_eq!(
            kept,
            ["u_3", "u_4", "u_5", "u_6", "u_7"],
            "newest kept, in order"
        );
    }

    #[tokio::test]
    async fn after_an_outage_the_waiting_events_and_the_gap_are_stored() {
        // The writer's recovery path, driven by hand: a batch refused by a
        // closed store goes back in front; the next writer stores it and
        // reports what the full queue dropped.
        let audit = quiet("t");
        let down = SqliteStore::memory().await.unwrap();
        down.close().await;
        audit.persist_with_cap(Arc::new(down), 3);
        for n in 0..5 {
            audit.record(login(n));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = audit.inner.pending.get().unwrap();
        assert_eq!(p.dropped.load(Ordering::Relaxed), 2);
        let up: DynStore = Arc::new(SqliteStore::memory().await.unwrap());
        tokio::spawn(write_events(Arc::downgrade(&audit.inner), up.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stored = up.audit_since(0, 10).await.unwrap();
            if stored.len() == 4 {
                let names: Vec<_> = stored
                    .iter()
                    .map(|e| (e.event.as_str(), e.subject.as_deref()))
                    .collect();
                assert_eq!(
                    names,
                    [
                        ("login", Some("u_2")),
                        ("login", Some("u_3")),
                        ("login", Some("u_4")),
                        ("audit_events_dropped", None),
                    ]
                );
                assert!(
                    stored[3]
                        .record
                        .contains("2 audit events could not be stored")
                );
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stored:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
