//! Every public vector tapgate supports verifies; every refusal has the right reason.

mod common;

use std::collections::BTreeMap;

use common::{Expect, load_all, matches, run};

#[test]
fn vectors_give_the_expected_verdicts() {
    let loaded = load_all();
    // file -> (verified, refused as expected, refused as unsupported, deviations)
    let mut counts: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &loaded.cases {
        let got = run(case);
        let row = counts.entry(case.file).or_default();
        if !matches(&case.expect, &got) {
            failures.push(format!(
                "{} / {}: expected {:?}, got {:?}",
                case.file,
                case.name,
                case.expect,
                got.as_ref().map_err(|e| format!("{}: {e}", e.reason()))
            ));
            continue;
        }
        if case.deviation.is_some() {
            row[3] += 1;
        }
        match case.expect {
            Expect::Accept => row[0] += 1,
            _ if case.unsupported => row[2] += 1,
            _ => row[1] += 1,
        }
    }
    let mut skipped: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for s in &loaded.skips {
        *skipped.entry(s.file).or_default().entry(s.why).or_default() += 1;
    }
    for (file, [ok, refused, unsupported, deviations]) in &counts {
        println!(
            "{file}: {ok} verified, {refused} refused as expected, {unsupported} refused as \
             unsupported (format/algorithm), {deviations} with a documented deviation, {} skipped",
            skipped
                .get(file)
                .map(|m| m.values().sum())
                .unwrap_or(0usize)
        );
        for (why, n) in skipped.get(file).into_iter().flatten() {
            println!("    skipped {n}: {why}");
        }
    }
    for c in loaded.cases.iter().filter(|c| c.deviation.is_some()) {
        println!(
            "deviation: {} / {}: {}",
            c.file,
            c.name,
            c.deviation.unwrap_or_default()
        );
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let verified: usize = counts.values().map(|r| r[0]).sum();
    assert!(verified >= 40, "only {verified} vectors verified");
}
