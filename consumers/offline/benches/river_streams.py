#!/usr/bin/env python3
"""River's synthetic streams with a known change point, written as driftline data sets, and
what River's ADWIN and NannyML detect on them, for the table in docs/DETECTION.md beside
`driftline backtest` on the same rows.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install nannyml==0.13.1 statsmodels river==0.26.1
    /tmp/peers/bin/python consumers/offline/benches/river_streams.py [--out /tmp/driftline-river]

Each stream: 40,000 rows, one a minute from 2024-01-01T00:00Z, River's ConceptDriftStream
from one concept to another centred on row 20,000 (width 200: abrupt); the first 10,000
rows are the reference. The features keep their distribution; only the labels' rule
changes (concept drift), so a detector must see it in the errors:

- `sea`: SEA(variant 0) to SEA(variant 3): y = x0 + x1 <= 8, then <= 9.5;
- `agrawal`: Agrawal(classification_function 0) to Agrawal(2): loan approval by age, then by
  age and salary.

Written to `--out`: `<name>.csv.gz` and `<name>.toml` (a spec, logistic model). Printed: the
`driftline backtest` command for each, and the peers' alarms before and after the change:

- River's ADWIN (defaults) on the 0/1 errors of scikit-learn's LogisticRegression fitted on
  the reference rows (standardised), one row at a time;
- NannyML's univariate and multivariate drift on chunks of 2,000 (features only: on a
  concept drift they should stay quiet, and a quiet chunk is not a miss of theirs).
"""

import argparse
import csv
import gzip
import io
import os
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

ROWS = 40_000
CHANGE = 20_000
REFERENCE = 10_000
# The change's width: abrupt. (River 0.26.1's ConceptDriftStream overflows math.exp when
# position / width > 177, so not narrower at this position.)
WIDTH = 200
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def stamp(i):
    return (START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def streams():
    from river.datasets import synth

    return {
        "sea": (
            synth.ConceptDriftStream(
                stream=synth.SEA(seed=42, variant=0),
                drift_stream=synth.SEA(seed=42, variant=3),
                seed=1, position=CHANGE, width=WIDTH,
            ),
            {0: ("x0", "numeric"), 1: ("x1", "numeric"), 2: ("x2", "numeric")},
        ),
        "agrawal": (
            synth.ConceptDriftStream(
                stream=synth.Agrawal(classification_function=0, seed=42),
                drift_stream=synth.Agrawal(classification_function=2, seed=42),
                seed=1, position=CHANGE, width=WIDTH,
            ),
            {
                "salary": ("salary", "numeric"), "commission": ("commission", "numeric"),
                "age": ("age", "numeric"), "elevel": ("elevel", "categorical"),
                "car": ("car", "categorical"), "zipcode": ("zipcode", "categorical"),
                "hvalue": ("hvalue", "numeric"), "hyears": ("hyears", "numeric"),
                "loan": ("loan", "numeric"),
            },
        ),
    }


def write(out, name, stream, columns):
    rows = []
    for i, (x, y) in enumerate(stream.take(ROWS)):
        rows.append([str(i), stamp(i)] + [repr(round(float(x[k]), 6)) if kind == "numeric" else str(int(x[k]))
                                          for k, (_, kind) in columns.items()] + [str(int(y))])
    header = ["id", "time"] + [n for n, _ in columns.values()] + ["y"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    with open(out / f"{name}.csv.gz", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(buf.getvalue().encode())
    spec = [
        f"# River's {name} stream with a concept change at row {CHANGE} ({stamp(CHANGE)}); see",
        "# consumers/offline/benches/river_streams.py.",
        "[dataset]", f'name = "{name}"', 'id_column = "id"', 'time_column = "time"',
        f'path = "{name}.csv.gz"', "", "[model]", f'name = "{name}"', 'algorithm = "logistic"', "",
        "[target]", 'column = "y"', 'kind = "classification"', "",
    ]
    for n, kind in columns.values():
        spec += ["[[features]]", f'name = "{n}"', f'kind = "{kind}"', "nullable = false", ""]
    (out / f"{name}.toml").write_text("\n".join(spec))
    return header, rows


def summary(name, alarm_rows):
    before = [r for r in alarm_rows if r < CHANGE]
    after = [r for r in alarm_rows if r >= CHANGE]
    delay = f"{after[0] - CHANGE} rows ({(after[0] - CHANGE) / 1440:.1f} days)" if after else "not detected"
    print(f"  {name}: {len(before)} alarms before the change; first after it: {delay}")


def peers(header, rows, columns):
    import numpy as np
    import pandas as pd
    from river import drift
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.compose import ColumnTransformer

    df = pd.DataFrame(rows, columns=header)
    names = [n for n, _ in columns.values()]
    cats = [n for n, k in columns.values() if k == "categorical"]
    nums = [n for n in names if n not in cats]
    for n in nums:
        df[n] = df[n].astype(float)
    for n in cats:
        df[n] = df[n].astype(object)
    df["y"] = df["y"].astype(int)
    ref, rest = df.iloc[:REFERENCE], df.iloc[REFERENCE:]
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), nums)] + ([("cat", OneHotEncoder(handle_unknown="ignore"), cats)] if cats else [])),
        LogisticRegression(max_iter=2000),
    )
    model.fit(ref[names], ref["y"])
    errors = (model.predict(rest[names]) != rest["y"].to_numpy()).astype(float)
    adwin = drift.ADWIN()
    alarms = []
    for i, e in enumerate(errors):
        adwin.update(e)
        if adwin.drift_detected:
            alarms.append(REFERENCE + i)
    summary("River ADWIN on a logistic model's 0/1 errors", alarms)

    import nannyml as nml

    chunk = 2000
    uni = nml.UnivariateDriftCalculator(column_names=names, chunk_size=chunk)
    uni.fit(ref)
    u = uni.calculate(rest).filter(period="analysis").to_df()
    uni_alert = u[[c for c in u.columns if c[-1] == "alert"]].any(axis=1).to_numpy()
    multi = nml.DataReconstructionDriftCalculator(column_names=names, chunk_size=chunk)
    multi.fit(ref)
    m = multi.calculate(rest).filter(period="analysis").to_df()
    either = uni_alert | m[("reconstruction_error", "alert")].to_numpy()
    summary(f"NannyML univariate + multivariate, chunks of {chunk}",
            [REFERENCE + (i + 1) * chunk - 1 for i, a in enumerate(either) if a])
    # CBPE on the same logistic model's probabilities: the performance estimate, no labels.
    scored = []
    for part in (ref, rest):
        part = part.copy()
        part["y_pred_proba"] = model.predict_proba(part[names])[:, 1]
        part["y_pred"] = (part["y_pred_proba"] >= 0.5).astype(int)
        scored.append(part)
    cbpe = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y", metrics=["accuracy"],
                    chunk_size=chunk, problem_type="classification_binary")
    cbpe.fit(scored[0])
    e = cbpe.estimate(scored[1]).filter(period="analysis").to_df()
    summary(f"NannyML CBPE accuracy (no labels), chunks of {chunk}",
            [REFERENCE + (i + 1) * chunk - 1 for i, a in enumerate(e[("accuracy", "alert")]) if a])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/driftline-river")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (stream, columns) in streams().items():
        header, rows = write(out, name, stream, columns)
        print(f"{name}: {out / name}.csv.gz, change at row {CHANGE} ({stamp(CHANGE)})")
        print(f"  driftline backtest --spec {out / name}.toml --reference-rows {REFERENCE} "
              f"--change-at {stamp(CHANGE)} --window 2000")
        peers(header, rows, columns)


if __name__ == "__main__":
    main()
