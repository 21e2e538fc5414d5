//! Audit events: every decision that matters is one structured JSON line on
//! stdout (Cloud Logging reads `severity` and `message`). The persisted,
//! hash-chained copy plugs in behind [`Audit::record`] in a later issue: the
//! callers already hand over complete events.

use serde::Serialize;
use std::io::Write;

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

pub struct Audit {
    instance: String,
    sink: Sink,
    /// Tests read the events back (see [`Audit::capture`]).
    captured: std::sync::Mutex<Option<Vec<AuditEvent>>>,
}

/// Where the JSON lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Stdout,
    /// The admin CLI: its stdout is its answer (`--json` for scripts).
    Stderr,
}

impl Audit {
    pub fn new(instance: String) -> Audit {
        Audit {
            instance,
            sink: Sink::Stdout,
            captured: std::sync::Mutex::new(None),
        }
    }

    /// For the admin CLI: the same lines, on stderr.
    pub fn to_stderr(instance: String) -> Audit {
        Audit {
            sink: Sink::Stderr,
            ..Audit::new(instance)
        }
    }

    /// Keep a copy of every event from now on (tests).
    pub fn capture(&self) {
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        c.get_or_insert_with(Vec::new);
    }

    /// The events kept since [`Audit::capture`].
    pub fn captured(&self) -> Vec<AuditEvent> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Write the event as one JSON line on stdout.
    pub fn record(&self, event: AuditEvent) {
        let outcome = match event.outcome {
            Some(Outcome::Success) => "success",
            Some(Outcome::Failure) => "failure",
            Some(Outcome::Deny) => "deny",
            None => "",
        };
        let message = match &event.reason {
            Some(r) => format!("{} {}: {}", event.event, outcome, r),
            None => format!("{} {}", event.event, outcome),
        };
        let line = Line {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            severity: if event.outcome == Some(Outcome::Success) {
                "NOTICE"
            } else {
                "WARNING"
            },
            message,
            log_type: "audit",
            instance: &self.instance,
            event: &event,
        };
        if let Ok(mut json) = serde_json::to_vec(&line) {
            json.push(b'\n');
            // One write call per line so concurrent events never interleave.
            let _ = match self.sink {
                Sink::Stdout => std::io::stdout().lock().write_all(&json),
                Sink::Stderr => std::io::stderr().lock().write_all(&json),
            };
        }
        if let Some(events) = self
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            events.push(event);
        }
    }
}
