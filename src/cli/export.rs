//! `tapgate admin export` / `import`: the store's whole state as one JSON
//! document on stdout / stdin (`crate::store::Snapshot`), to move from the
//! demo's SQLite file to PostgreSQL or back. Consumed challenges are not
//! moved (they only matter for a ceremony's few minutes).

use crate::audit::{Audit, AuditEvent, Outcome};
use crate::store::{DynStore, Snapshot, StoreError};
use std::io::{Read, Write};

/// An audit event of the operator (`cli`) about the whole store.
fn event(name: &'static str, outcome: Outcome, detail: String) -> AuditEvent {
    let mut ev = AuditEvent::new(name, outcome);
    ev.actor = Some("cli".into());
    ev.target = Some("store".into());
    ev.detail = Some(detail);
    ev
}

/// Print the snapshot (pretty JSON) on stdout; a summary on stderr. The
/// export holds every key and invite hash: it is audited.
pub async fn export(store: &DynStore, audit: &Audit) -> Result<(), String> {
    let snap = store.export().await.map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&snap).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the export: {e}"))?;
    audit.record(event("state_exported", Outcome::Success, summary(&snap)));
    eprintln!("exported {}", summary(&snap));
    Ok(())
}

/// Read a snapshot from stdin and load it in one transaction. `Err(true,
/// …)` for a bad document (usage), `Err(false, …)` for a store failure.
pub async fn import(
    store: &DynStore,
    audit: &Audit,
    force: bool,
) -> Result<String, (bool, String)> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| (true, format!("cannot read the export from stdin: {e}")))?;
    let snap: Snapshot = serde_json::from_str(&text)
        .map_err(|e| (true, format!("stdin is not a tapgate state export: {e}")))?;
    snap.check().map_err(|e| (true, e))?;
    let detail = format!(
        "{}{}",
        summary(&snap),
        if force { " (--force)" } else { "" }
    );
    match store.import(&snap, force).await {
        Ok(()) => {
            audit.record(event("state_imported", Outcome::Success, detail));
            Ok(summary(&snap))
        }
        Err(e) => {
            let m = match e {
                StoreError::Other(m) if m.contains("not empty") => m,
                e => format!("import failed, nothing was changed: {e}"),
            };
            let mut ev = event("state_imported", Outcome::Failure, detail);
            ev.reason = Some(m.clone());
            audit.record(ev);
            Err((false, m))
        }
    }
}

fn summary(s: &Snapshot) -> String {
    format!(
        "{} users, {} keys, {} invites, {} revocation entries",
        s.users.len(),
        s.credentials.len(),
        s.invites.len(),
        s.revocations.len()
    )
}
