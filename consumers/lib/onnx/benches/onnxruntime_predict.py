"""The peer of benches/predict.rs: onnxruntime predicting the fixture models on the fixture
rows, a whole batch (best of REPS, µs a row) and single rows one call at a time (median of
CALLS calls, µs). Prints `<model> <batch µs a row> <single µs>` per model, then versions.

    python onnxruntime_predict.py <tests/fixtures/onnx> CALLS REPS
"""

import os
import sys
import time

import numpy as np
import onnxruntime as ort
import pandas as pd

NUMERIC = ["dep_delay", "distance", "hour"]
CATEGORICAL = ["carrier", "origin"]
here, calls, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = pd.read_csv(os.path.join(here, "rows.csv.gz"))


def gbr_feed(frame):
    """One input per column, as driftline feeds an imported model (make_fixtures.py)."""
    out = {c: frame[[c]].to_numpy(dtype=np.float32) for c in NUMERIC}
    out.update({c: frame[[c]].astype(str).to_numpy(dtype=object) for c in CATEGORICAL})
    return out


def lgbm_feed(frame):
    return {"numerics": frame[NUMERIC].to_numpy(dtype=np.float32)}


options = ort.SessionOptions()
options.intra_op_num_threads = 1  # driftline's plan runs on one thread
for name, feed in [("flights-gbr", gbr_feed), ("flights-lgbm", lgbm_feed)]:
    session = ort.InferenceSession(os.path.join(here, name + ".onnx"), options)
    batch = feed(rows)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        session.run(None, batch)
        best = min(best, time.perf_counter() - t)
    # Each single row fed as the service would get it: built from the row, then run.
    singles = [feed(rows.iloc[[i % len(rows)]]) for i in range(calls)]
    times = []
    for one in singles:
        t = time.perf_counter()
        session.run(None, one)
        times.append(time.perf_counter() - t)
    times.sort()
    print(name, best * 1e6 / len(rows), times[len(times) // 2] * 1e6)
print(f"onnxruntime {ort.__version__}, numpy {np.__version__}")
