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
}

impl Audit {
    pub fn new(instance: String) -> Audit {
        Audit { instance }
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
            let _ = std::io::stdout().lock().write_all(&json);
        }
    }
}
