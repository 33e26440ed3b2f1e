//! The send_data binary, offline (Avro files, no broker): what a user sees for a CSV with
//! broken lines, with and without --strict.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Features `x` (numeric, required) and `colour` (categorical, from column `c`); time `t`.
const SPEC: &str = include_str!("../../tests/fixtures/toy.toml");

/// Lines 2-7; line 4 has a word for a number, line 6 a missing field.
const CSV: &str = "t,x,c,y
2024-01-01 00:00,1.5,red,10
2024-01-01 00:01,2.5,blue,11
2024-01-01 00:02,lots,red,12
2024-01-01 00:03,3.5,green,13
2024-01-01 00:04,4.5,14
2024-01-01 00:05,5.5,red,
";

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toy.toml"), SPEC).unwrap();
    std::fs::write(dir.path().join("toy.csv"), CSV).unwrap();
    let out = dir.path().join("out");
    (dir, out)
}

fn send_data(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_send_data"))
        .arg("--spec")
        .arg(dir.join("toy.toml"))
        .arg("--data")
        .arg(dir.join("toy.csv"))
        .arg("--avro-dir")
        .arg(out)
        .args(extra)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn records(path: &Path) -> usize {
    apache_avro::Reader::new(std::fs::File::open(path).unwrap())
        .unwrap()
        .count()
}

#[test]
fn reports_broken_lines_by_number_and_sends_the_rest() {
    let (dir, out) = setup();
    let result = send_data(dir.path(), &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("line=4"), "{stderr}");
    assert!(
        stderr.contains("column `x`: \"lots\" is not a number"),
        "{stderr}"
    );
    assert!(stderr.contains("line=6"), "{stderr}");
    assert!(
        stderr.contains("has 3 fields, the header has 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sent 4 requests and 3 actuals, 0 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad rows skipped: 2 (first at line 4"),
        "{stderr}"
    );
    // The last row has no target: a request without ground truth.
    assert!(
        stderr.contains("rows without ground truth (empty target): 1"),
        "{stderr}"
    );
    assert_eq!(records(&out.join("driftline.requests.avro")), 4);
    assert_eq!(records(&out.join("driftline.actuals.avro")), 3);
}

#[test]
fn strict_stops_at_the_first_broken_line() {
    let (dir, out) = setup();
    let result = send_data(dir.path(), &out, &["--strict"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stopped at the bad row on line 4"),
        "{stderr}"
    );
    assert!(stderr.contains("sent 2 requests and 2 actuals"), "{stderr}");
    assert_eq!(records(&out.join("driftline.requests.avro")), 2);
}

#[test]
fn a_spec_naming_a_column_the_file_lacks_is_an_error_not_a_panic() {
    let (dir, out) = setup();
    std::fs::write(dir.path().join("toy.csv"), "t,x,y\n2024-01-01,1,2\n").unwrap();
    let result = send_data(dir.path(), &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no column named c (the spec needs it)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
