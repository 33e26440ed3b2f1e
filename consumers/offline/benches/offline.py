"""Times Evidently's DataDriftPreset and a SciPy ks_2samp loop on the two CSV files that
`cargo bench -p driftline-offline --bench drift_files` times `driftline drift` on.

    python3 -m venv venv && venv/bin/pip install "evidently==0.7.23" "pandas<3" scipy
    venv/bin/python benches/offline.py REF.csv CUR.csv [RUNS]

Both read the files (as `driftline drift` does) and compare the 13 features of
data/flights.toml: 11 numeric, 2 categorical. Best of RUNS wall times.
"""

import sys
import time

import pandas as pd
from scipy import stats

NUMERIC = ["dep_delay", "distance", "hour", "temp", "dewp", "humid", "wind_speed", "wind_gust",
           "precip", "pressure", "visib"]
CATEGORICAL = ["carrier", "origin"]
COLUMNS = NUMERIC + CATEGORICAL


def read(path):
    return pd.read_csv(path, usecols=COLUMNS, dtype={c: "string" for c in CATEGORICAL})


def scipy_loop(ref_path, cur_path):
    ref, cur = read(ref_path), read(cur_path)
    out = {}
    for c in NUMERIC:
        out[c] = stats.ks_2samp(ref[c].dropna().to_numpy(dtype=float), cur[c].dropna().to_numpy(dtype=float)).pvalue
    for c in CATEGORICAL:
        table = pd.concat([ref[c].value_counts(), cur[c].value_counts()], axis=1).fillna(0)
        out[c] = stats.chi2_contingency(table.T.to_numpy(dtype=float))[1]
    return out


def evidently_preset(ref_path, cur_path):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = read(ref_path), read(cur_path)
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    report = Report([DataDriftPreset()])
    return report.run(Dataset.from_pandas(cur, data_definition=definition),
                      Dataset.from_pandas(ref, data_definition=definition))


def best(f, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


if __name__ == "__main__":
    ref_path, cur_path = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    print(f"scipy ks_2samp/chi2 loop: {best(lambda: scipy_loop(ref_path, cur_path), runs) * 1000:.1f} ms")
    print(f"evidently DataDriftPreset: {best(lambda: evidently_preset(ref_path, cur_path), runs) * 1000:.1f} ms")
