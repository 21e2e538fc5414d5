//! `tapgate admin export` / `import`: the store's whole state as one JSON
//! document on stdout / stdin (`crate::store::Snapshot`), to move from the
//! demo's SQLite file to PostgreSQL or back. Consumed challenges are not
//! moved (they only matter for a ceremony's few minutes).

use crate::store::{DynStore, Snapshot, StoreError};
use std::io::{Read, Write};

/// Print the snapshot (pretty JSON) on stdout; a summary on stderr.
pub async fn export(store: &DynStore) -> Result<(), String> {
    let snap = store.export().await.map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&snap).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the export: {e}"))?;
    eprintln!("exported {}", summary(&snap));
    Ok(())
}

/// Read a snapshot from stdin and load it in one transaction. `Err(true,
/// …)` for a bad document (usage), `Err(false, …)` for a store failure.
pub async fn import(store: &DynStore, force: bool) -> Result<String, (bool, String)> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| (true, format!("cannot read the export from stdin: {e}")))?;
    let snap: Snapshot = serde_json::from_str(&text)
        .map_err(|e| (true, format!("stdin is not a tapgate state export: {e}")))?;
    snap.check().map_err(|e| (true, e))?;
    store.import(&snap, force).await.map_err(|e| match e {
        StoreError::Other(m) if m.contains("not empty") => (false, m),
        e => (false, format!("import failed, nothing was changed: {e}")),
    })?;
    Ok(summary(&snap))
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
