//! `driftline drift` with a spec: each feature's line from how its distance varies between
//! sub-windows of the reference, and the multivariate check of the features together.

use std::path::{Path, PathBuf};

use driftline_monitor::cli::Thresholds;
use driftline_offline::drift::{DriftArgs, DriftFormat, drift};
use serde_json::Value;

const SPEC: &str = r#"
[dataset]
name = "pair"
time_column = "t"

[model]
name = "pair"
algorithm = "linear"

[target]
column = "y"
kind = "regression"

[[features]]
name = "a"
kind = "numeric"

[[features]]
name = "b"
kind = "numeric"
"#;

/// A deterministic noise in [-0.5, 0.5).
fn noise(i: u64) -> f64 {
    let x = i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// Rows `from..to` of a slow wave `a` (a cycle every 4,000 rows, as weather is over the
/// seasons) with `b` following it closely; `b_of` says which row's `a` b follows.
fn write(path: &Path, rows: std::ops::Range<u64>, shift: f64, b_of: impl Fn(u64) -> u64) {
    let a = |i: u64| (i as f64 * std::f64::consts::TAU / 4_000.0).sin() + 0.3 * noise(i) + shift;
    let mut s = String::from("t,a,b,y\n");
    for i in rows {
        let j = b_of(i);
        s.push_str(&format!("{i},{},{},0\n", a(i), a(j) + 0.1 * noise(j + 7)));
    }
    std::fs::write(path, s).unwrap();
}

fn run(dir: &Path, current: &str, thresholds: Thresholds) -> Value {
    let args = DriftArgs {
        reference: dir.join("reference.csv"),
        current: dir.join(current),
        spec: Some(dir.join("spec.toml")),
        binning: Default::default(),
        thresholds,
        format: DriftFormat::Json,
    };
    serde_json::from_str(&drift(&args).unwrap()).unwrap()
}

fn files() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join("spec.toml"), SPEC).unwrap();
    write(&path.join("reference.csv"), 0..20_000, 0.0, |i| i);
    // The same process, three quarters of a cycle on.
    write(&path.join("later.csv"), 20_000..23_000, 0.0, |i| i);
    write(&path.join("shifted.csv"), 20_000..23_000, 2.0, |i| i);
    // b is another row's b: each column holds the values it held, the pair no longer
    // together.
    write(&path.join("apart.csv"), 20_000..23_000, 0.0, |i| {
        20_000 + (i * 7_919) % 3_000
    });
    (dir, path)
}

#[test]
fn a_stretch_of_the_same_slow_process_passes_the_reference_lines_but_not_the_fixed_ones() {
    let (_dir, path) = files();
    let fixed = run(&path, "later.csv", Thresholds::Fixed);
    assert_eq!(fixed["columns"]["a"]["drifted"], true, "{fixed:#}");
    let calibrated = run(&path, "later.csv", Thresholds::Calibrated);
    for c in ["a", "b"] {
        let column = &calibrated["columns"][c];
        assert_eq!(column["drifted"], false, "{calibrated:#}");
        let line = column["signals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "wasserstein_norm")
            .unwrap_or_else(|| panic!("{calibrated:#}"));
        assert!(
            line["method"]
                .as_str()
                .unwrap()
                .starts_with("from the reference's sub-windows"),
            "{line}"
        );
        assert!(line["threshold"].as_f64().unwrap() > 0.1, "{line}");
    }
    assert_eq!(calibrated["drifted"], false, "{calibrated:#}");
}

#[test]
fn a_shift_past_the_reference_lines_drifts() {
    let (_dir, path) = files();
    let report = run(&path, "shifted.csv", Thresholds::Calibrated);
    assert_eq!(report["columns"]["a"]["drifted"], true, "{report:#}");
    assert_eq!(report["drifted"], true, "{report:#}");
}

#[test]
fn features_that_stop_moving_together_are_seen_by_the_multivariate_check_alone() {
    let (_dir, path) = files();
    let report = run(&path, "apart.csv", Thresholds::Calibrated);
    for c in ["a", "b"] {
        assert_eq!(report["columns"][c]["drifted"], false, "{report:#}");
    }
    let m = &report["multivariate"];
    assert_eq!(m["signal"]["fired"], true, "{report:#}");
    assert_eq!(report["drifted"], true, "{report:#}");
    // The same rows as they were: the pair together, the check quiet.
    let together = run(&path, "later.csv", Thresholds::Calibrated);
    assert_eq!(
        together["multivariate"]["signal"]["fired"], false,
        "{together:#}"
    );
    assert!(
        m["signal"]["value"].as_f64().unwrap()
            > 2.0
                * together["multivariate"]["signal"]["value"]
                    .as_f64()
                    .unwrap(),
        "{m} vs {together:#}"
    );
}

#[test]
fn drift_command_compares_two_files_as_json_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (dir.path().join("r.csv"), dir.path().join("c.csv"));
    let rows = |shift: f64| -> String {
        let mut s = String::from("x,c\n");
        for i in 0..3_000 {
            s.push_str(&format!(
                "{},{}\n",
                (i % 100) as f64 + shift,
                ["a", "b"][i % 2]
            ));
        }
        s
    };
    std::fs::write(&r, rows(0.0)).unwrap();
    std::fs::write(&c, rows(30.0)).unwrap();
    let mut args = DriftArgs {
        reference: r,
        current: c,
        spec: None,
        binning: Default::default(),
        thresholds: Thresholds::Calibrated,
        format: DriftFormat::Json,
    };
    let json: serde_json::Value = serde_json::from_str(&drift(&args).unwrap()).unwrap();
    assert_eq!(json["columns"]["x"]["drifted"], true);
    assert_eq!(json["columns"]["c"]["drifted"], false);
    args.format = DriftFormat::Table;
    assert!(drift(&args).unwrap().contains("1 of 2 columns drifted"));
}
