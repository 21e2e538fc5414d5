//! `tapgate audit list`: read the stored audit record (the events of every
//! instance, in one order; PRODUCT.md §6), oldest first, in pages. Exit
//! codes: 0 listed, 1 the store failed, 2 bad configuration or arguments.

use crate::store::AuditEntry;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct AuditArgs {
    /// Configuration file; without it, the demo's defaults (./tapgate-data/).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print stored events after a position, oldest first: one line each
    /// (`SEQ TIME INSTANCE MESSAGE`), or with `--json` each event's JSON as
    /// it was logged, with its `seq` added. To page, pass the last `seq`
    /// printed as the next `--after`.
    List {
        /// Only events after this position (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many events.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Only the newest `limit` events (ignores `--after`).
        #[arg(long)]
        tail: bool,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: AuditArgs) -> ExitCode {
    let store = match super::config_and_store(args.config.as_deref()).await {
        Ok((_, store)) => store,
        Err(code) => return code,
    };
    let AuditCommand::List {
        after,
        limit,
        tail,
        json,
    } = args.command;
    let events = if tail {
        newest(store.as_ref(), limit).await
    } else {
        store.audit_since(after, limit).await
    };
    let events = match events {
        Ok(e) => e,
        Err(e) => {
            super::report(&e);
            return ExitCode::FAILURE;
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in &events {
        let _ = writeln!(out, "{}", if json { as_json(e) } else { as_text(e) });
    }
    ExitCode::SUCCESS
}

/// The newest `limit` events: find the end by paging (the record is read
/// by position only, so this costs one pass; fine for an operator's look).
async fn newest(
    store: &dyn crate::store::Store,
    limit: u32,
) -> Result<Vec<AuditEntry>, crate::store::StoreError> {
    let mut window: std::collections::VecDeque<AuditEntry> = Default::default();
    let mut after = 0;
    loop {
        let page = store.audit_since(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() == 5_000;
        window.extend(page);
        while window.len() > limit as usize {
            window.pop_front();
        }
        if !full {
            break;
        }
    }
    Ok(window.into())
}

fn as_json(e: &AuditEntry) -> String {
    match serde_json::from_str::<serde_json::Value>(&e.record) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("seq".into(), e.seq.into());
            serde_json::Value::Object(m).to_string()
        }
        // Stored as logged; should it not parse, show it unchanged.
        _ => e.record.clone(),
    }
}

fn as_text(e: &AuditEntry) -> String {
    let record: serde_json::Value = serde_json::from_str(&e.record).unwrap_or_default();
    let time = record["time"].as_str().unwrap_or("?");
    let message = record["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{} {}", e.event, e.outcome));
    let mut line = format!("{:>6}  {time}  {}  {message}", e.seq, e.instance);
    for key in [
        "actor",
        "subject",
        "email",
        "target",
        "ip",
        "route",
        "request_id",
    ] {
        if let Some(v) = record[key].as_str() {
            line.push_str(&format!("  {key}={v}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_carry_the_position_and_the_logged_fields() {
        let e = AuditEntry {
            seq: 42,
            id: "x.1.1".into(),
            time_ms: 0,
            instance: "rev-abc".into(),
            event: "login".into(),
            outcome: "failure".into(),
            subject: Some("u_1".into()),
            record: r#"{"time":"2026-12-03T10:00:00.000Z","message":"login failure: bad signature","subject":"u_1","ip":"10.0.0.1"}"#.into(),
        };
        assert_eq!(
            as_text(&e),
            "    42  2026-12-03T10:00:00.000Z  rev-abc  login failure: bad signature  subject=u_1  ip=10.0.0.1"
        );
        let j: serde_json::Value = serde_json::from_str(&as_json(&e)).unwrap();
        assert_eq!(j["seq"], 42);
        assert_eq!(j["ip"], "10.0.0.1");
    }
}
