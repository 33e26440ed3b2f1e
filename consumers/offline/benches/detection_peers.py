#!/usr/bin/env python3
"""What NannyML and River's ADWIN detect on a stream with a documented change, for the
table in docs/DETECTION.md beside `driftline backtest` on the same rows.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install nannyml==0.13.1 statsmodels river==0.26.1
    /tmp/peers/bin/python consumers/offline/benches/detection_peers.py [--chunk 5000]

The stream: data/car_loan.csv.gz (NannyML's synthetic car-loan set, data/prepare_car_loan.py);
reference = the rows before 2018-10-30T18:00Z, change at 2019-03-31T03:00Z (analysis row
25,000, as NannyML documents). For each peer it prints the alarms before the change (false
alarms) and the delay from the change to the first alarm after it, in rows and days:

- NannyML, as its quick start runs it: UnivariateDriftCalculator (defaults: Jensen-Shannon for
  continuous and categorical columns) and DataReconstructionDriftCalculator (defaults) on
  tumbling chunks of `--chunk` rows, thresholds from the reference chunks; a chunk alarms when
  any feature or the reconstruction error alerts. An alarm is dated at its chunk's last row
  (when NannyML could first have computed it).
- NannyML's CBPE (accuracy, from the set's own model's y_pred_proba and y_pred) on the same
  chunks: its estimate against the realised accuracy, and its alerts (thresholds from the
  reference chunks), which need no label.
- River's ADWIN (defaults, delta 0.002) fed the analysis rows' 0/1 errors of the data set's own
  model (y_pred against repaid), one row at a time.
"""

import argparse
import os
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
# NannyML reports usage to a web service unless told not to; this machine has no network.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

REFERENCE_END = pd.Timestamp("2018-10-30T18:00:00Z")
CHANGE = pd.Timestamp("2019-03-31T03:00:00Z")
NUMERIC = ["car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"]
CATEGORICAL = ["salary_range", "repaid_loan_on_prev_car", "size_of_downpayment"]


def load(path):
    df = pd.read_csv(path, dtype={c: object for c in CATEGORICAL})
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    for c in CATEGORICAL:
        df[c] = df[c].astype(object)
    return df


def summary(name, alarm_times, alarm_rows, analysis):
    change_row = int((analysis["timestamp"] < CHANGE).sum())
    before = [t for t in alarm_times if t < CHANGE]
    after = [(t, r) for t, r in zip(alarm_times, alarm_rows) if t >= CHANGE]
    if after:
        t, r = after[0]
        delay = f"{r - change_row} rows, {(t - CHANGE).total_seconds() / 86400:.1f} days"
    else:
        delay = "not detected"
    print(f"{name}: {len(before)} false alarms before the change; first alarm after it: {delay}")


def nannyml_run(reference, analysis, chunk):
    import nannyml as nml

    columns = NUMERIC + CATEGORICAL
    uni = nml.UnivariateDriftCalculator(column_names=columns, chunk_size=chunk)
    uni.fit(reference)
    u = uni.calculate(analysis).filter(period="analysis").to_df()
    alert_cols = [c for c in u.columns if c[-1] == "alert"]
    uni_alert = u[alert_cols].any(axis=1).to_numpy()
    multi = nml.DataReconstructionDriftCalculator(column_names=columns, chunk_size=chunk)
    multi.fit(reference)
    m = multi.calculate(analysis).filter(period="analysis").to_df()
    multi_alert = m[("reconstruction_error", "alert")].to_numpy()
    ends = u[("chunk", "chunk", "end_index")].to_numpy() if ("chunk", "chunk", "end_index") in u.columns else None
    if ends is None:
        ends = np.array([min((i + 1) * chunk, len(analysis)) - 1 for i in range(len(u))])
    times = [analysis["timestamp"].iloc[int(e)] for e in ends]
    for name, alerts in [
        ("NannyML univariate (Jensen-Shannon)", uni_alert),
        ("NannyML multivariate (PCA reconstruction)", multi_alert),
        ("NannyML, either", uni_alert | multi_alert),
    ]:
        idx = [i for i, a in enumerate(alerts) if a]
        summary(
            f"{name}, chunks of {chunk}",
            [times[i] for i in idx],
            [int(ends[i]) + 1 for i in idx],
            analysis,
        )


def cbpe_run(reference, analysis, chunk):
    import nannyml as nml

    cbpe = nml.CBPE(
        y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="repaid", metrics=["accuracy"],
        chunk_size=chunk, problem_type="classification_binary",
    )
    cbpe.fit(reference)
    e = cbpe.estimate(analysis).filter(period="analysis").to_df()
    ends = e[("chunk", "end_index")].to_numpy()
    gaps = (e[("accuracy", "value")] - e[("accuracy", "realized")]).abs()
    inside = ((e[("accuracy", "lower_confidence_boundary")] <= e[("accuracy", "realized")])
              & (e[("accuracy", "realized")] <= e[("accuracy", "upper_confidence_boundary")])).sum()
    print(f"NannyML CBPE accuracy, chunks of {chunk}: mean |estimate - realised| {gaps.mean():.4f} "
          f"over {len(e)} chunks, the realised value within the band in {inside}")
    idx = [i for i, a in enumerate(e[("accuracy", "alert")]) if a]
    summary(
        f"NannyML CBPE accuracy (no labels), chunks of {chunk}",
        [analysis["timestamp"].iloc[int(ends[i])] for i in idx],
        [int(ends[i]) + 1 for i in idx],
        analysis,
    )


def adwin_run(analysis):
    from river import drift

    adwin = drift.ADWIN()
    errors = (analysis["y_pred"] != analysis["repaid"]).astype(float).to_numpy()
    times, rows = [], []
    for i, e in enumerate(errors):
        adwin.update(e)
        if adwin.drift_detected:
            times.append(analysis["timestamp"].iloc[i])
            rows.append(i + 1)
    summary("River ADWIN (defaults) on the 0/1 errors", times, rows, analysis)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/car_loan.csv.gz")
    ap.add_argument("--chunk", type=int, default=5000)
    args = ap.parse_args()
    df = load(args.data)
    reference = df[df["timestamp"] < REFERENCE_END].reset_index(drop=True)
    analysis = df[df["timestamp"] >= REFERENCE_END].reset_index(drop=True)
    print(f"reference {len(reference)} rows, analysis {len(analysis)} rows, change at analysis row {int((analysis['timestamp'] < CHANGE).sum())}")
    nannyml_run(reference, analysis, args.chunk)
    cbpe_run(reference, analysis, args.chunk)
    adwin_run(analysis)


if __name__ == "__main__":
    main()
