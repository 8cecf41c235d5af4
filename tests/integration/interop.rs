//! The Parquet datasets must read as-is outside Vigil: pyarrow and DuckDB
//! (tests/interop/check_parquet.py) see the same rows, types and partitions.
//!
//! Needs a Python with pyarrow and duckdb in `VIGIL_PYTHON`; scripts/test.sh
//! installs one and sets `VIGIL_REQUIRE_INTEROP=1`, which turns a missing
//! interpreter into a failure instead of a skip.

use std::process::Command;
use std::sync::Arc;

use vigil_ops::rules::RuleSet;

use crate::common::*;

#[test]
fn pyarrow_and_duckdb_read_the_datasets() {
    let Some(python) = crate::common::interop_python("pyarrow and duckdb") else {
        return;
    };
    let run = simulate(small_fleet(30, 26.0, 5));
    let dir = tempfile::tempdir().unwrap();
    let s = replay(
        dir.path(),
        "interop",
        &run.records,
        &settings(),
        Arc::new(RuleSet::default_rules()),
    );
    assert!(s.alert_rows > 0, "the fleet should raise alerts");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/check_parquet.py"
    );
    let o = Command::new(python)
        .arg(script)
        .arg(dir.path())
        .args([
            "--aggregates",
            &s.aggregate_rows.to_string(),
            "--alerts",
            &s.alert_rows.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check_parquet.py failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
