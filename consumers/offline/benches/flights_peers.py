#!/usr/bin/env python3
"""What NannyML and River's ADWIN detect on the flights data, for the flights table in
docs/DETECTION.md beside `driftline backtest` on the same rows and predictions.

    driftline backtest --spec data/flights.toml --reference-until 2013-03-01 \\
      --until 2013-12-31 --change-at 2013-04-01 --predictions-out /tmp/flights-pred.csv
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install nannyml==0.13.1 statsmodels river==0.26.1
    /tmp/peers/bin/python consumers/offline/benches/flights_peers.py /tmp/flights-pred.csv [--chunk 10000]

The file holds every labelled row with the first model's prediction (driftline's linear
model, trained as the trainer trains on January and February) and its period: `train` and
`holdout` (the trainer's split of the reference) and `analysis` (March to December; the
documented change is 2013-04-01). For each peer it prints the alarms before the change
(false alarms) and the delay from the change to the first alarm after it:

- NannyML, as its quick start runs it: UnivariateDriftCalculator (defaults: Jensen-Shannon)
  and DataReconstructionDriftCalculator (defaults) on tumbling chunks of `--chunk` rows
  (10,000: driftline's window), reference = the whole reference period; an alarm is dated
  at its chunk's last row.
- NannyML's DLE (MAE), fitted as NannyML documents on rows the model did not learn from
  (the holdout) with the model's predictions, on the same chunks: its estimate against the
  realised MAE, and its alerts (thresholds from the holdout's chunks).
- River's ADWIN (defaults, delta 0.002) fed the analysis rows' absolute errors, one at a
  time (River's ADWIN takes any real values).
"""

import argparse
import os
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
# NannyML reports usage to a web service unless told not to; this machine has no network.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
# pandas 3's Arrow-backed strings break NannyML 0.13's categorical handling.
pd.set_option("future.infer_string", False)

CHANGE = pd.Timestamp("2013-04-01T00:00:00Z")
CATEGORICAL = ["carrier", "origin"]


def summary(name, alarm_times, analysis):
    before = [t for t in alarm_times if t < CHANGE]
    after = [t for t in alarm_times if t >= CHANGE]
    delay = f"{(after[0] - CHANGE).total_seconds() / 86400:.1f} days" if after else "not detected"
    print(f"{name}: {len(before)} false alarms before the change; first alarm after it: {delay}")


def chunk_ends(frame, chunk):
    ends = [min((i + 1) * chunk, len(frame)) - 1 for i in range((len(frame) + chunk - 1) // chunk)]
    return [frame["timestamp"].iloc[e] for e in ends]


def drift_run(reference, analysis, features, chunk):
    import nannyml as nml

    uni = nml.UnivariateDriftCalculator(column_names=features, chunk_size=chunk)
    uni.fit(reference)
    u = uni.calculate(analysis).filter(period="analysis").to_df()
    uni_alert = u[[c for c in u.columns if c[-1] == "alert"]].any(axis=1).to_numpy()
    multi = nml.DataReconstructionDriftCalculator(column_names=features, chunk_size=chunk)
    multi.fit(reference)
    m = multi.calculate(analysis).filter(period="analysis").to_df()
    multi_alert = m[("reconstruction_error", "alert")].to_numpy()
    times = chunk_ends(analysis, chunk)
    for name, alerts in [
        ("NannyML univariate (Jensen-Shannon)", uni_alert),
        ("NannyML multivariate (PCA reconstruction)", multi_alert),
        ("NannyML, either", uni_alert | multi_alert),
    ]:
        summary(f"{name}, chunks of {chunk}", [t for t, a in zip(times, alerts) if a], analysis)


def dle_run(holdout, analysis, features, chunk):
    import nannyml as nml

    dle = nml.DLE(
        feature_column_names=features, y_pred="y_pred", y_true="y_true",
        timestamp_column_name="timestamp", metrics=["mae"], chunk_size=chunk,
    )
    dle.fit(holdout)
    e = dle.estimate(analysis).filter(period="analysis").to_df()
    mae = e["mae"]
    times = chunk_ends(analysis, chunk)
    realised = np.array([
        np.abs(analysis["y_true"].iloc[i * chunk:(i + 1) * chunk] - analysis["y_pred"].iloc[i * chunk:(i + 1) * chunk]).mean()
        for i in range(len(times))
    ])
    gaps = np.abs(mae["value"].to_numpy() - realised)
    inside = ((mae["lower_confidence_boundary"].to_numpy() <= realised)
              & (realised <= mae["upper_confidence_boundary"].to_numpy())).sum()
    print(f"NannyML DLE mae, chunks of {chunk}: mean |estimate - realised| {gaps.mean():.4f} "
          f"over {len(gaps)} chunks, the realised value within the band in {inside}")
    summary(f"NannyML DLE mae (no labels), chunks of {chunk}",
            [t for t, a in zip(times, mae["alert"]) if a], analysis)


def adwin_run(analysis):
    from river import drift

    adwin = drift.ADWIN()
    errors = (analysis["y_true"] - analysis["y_pred"]).abs().to_numpy()
    times = []
    for i, e in enumerate(errors):
        adwin.update(float(e))
        if adwin.drift_detected:
            times.append(analysis["timestamp"].iloc[i])
    summary("River ADWIN (defaults) on the absolute errors", times, analysis)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", help="the CSV of `driftline backtest --predictions-out`")
    ap.add_argument("--chunk", type=int, default=10000)
    args = ap.parse_args()
    df = pd.read_csv(args.predictions, dtype={c: object for c in CATEGORICAL})
    df = df.rename(columns={"event_time": "timestamp", "prediction": "y_pred", "label": "y_true"})
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    features = [c for c in df.columns if c not in ("timestamp", "period", "y_pred", "y_true")]
    reference = df[df["period"] != "analysis"].reset_index(drop=True)
    holdout = df[df["period"] == "holdout"].reset_index(drop=True)
    analysis = df[df["period"] == "analysis"].reset_index(drop=True)
    print(f"reference {len(reference)} rows (holdout {len(holdout)}), analysis {len(analysis)} rows, "
          f"change at analysis row {int((analysis['timestamp'] < CHANGE).sum())}")
    drift_run(reference, analysis, features, args.chunk)
    dle_run(holdout, analysis, features, args.chunk)
    adwin_run(analysis)


if __name__ == "__main__":
    main()
