#!/usr/bin/env python3
"""scikit-learn's side of benches/fit.rs: the same rows, split, encoding and models.

Run by `cargo bench -p driftline-model --bench fit` when SKLEARN_PYTHON is set; prints one
JSON object: per algorithm the best-of-`--reps` fit time (preprocessing included, as
driftline's fit includes its encoder), holdout metrics and the latency of a one-row
`predict` call (what a FastAPI + scikit-learn endpoint pays per request).

Equivalences with driftline's defaults (consumers/lib/model/src/algorithm.rs):
- encoding: numerics standardised, missing → the mean plus an indicator column (StandardScaler
  ignores NaN when fitting, then SimpleImputer fills 0 = the mean and adds the indicator);
  categoricals one-hot with one level dropped; unseen categories → all zeros.
- linear: LinearRegression. lasso / elastic-net: Lasso / ElasticNet with alpha = penalty 0.01
  (l1_ratio 0.5). ridge: the same objective, 1/(2n)·RSS + ½·penalty·‖w‖², is Ridge with
  alpha = penalty · n_train.
- logistic: LogisticRegression(C = 1/alpha = 1, lbfgs, max_iter 200).
- random-forest: RandomForestClassifier(20 trees, max_depth 10, max_samples 0.5,
  min_samples_leaf 5, all features, n_jobs = --threads).
- boosted-regression / boosted-classification (driftline's `boosted-trees` with 200 trees,
  learning_rate 0.1, max_depth 6, l2 1, min_leaf_weight 1, no search):
  HistGradientBoostingRegressor / Classifier(max_iter 200, learning_rate 0.1, max_depth 6,
  l2_regularization 1, min_samples_leaf 1, max_leaf_nodes None, no early stopping), and,
  when lightgbm is installed, LGBMRegressor / LGBMClassifier with the same settings
  (num_leaves 64 lets depth 6 bind, min_child_weight 1, min_child_samples 1, reg_lambda 1,
  n_jobs = --threads) as `lightgbm-boosted-*`.
"""

import argparse
import json
import math
import time

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = ["dep_delay", "distance", "hour", "temp", "dewp", "humid", "wind_speed", "wind_gust",
           "precip", "pressure", "visib"]
CATEGORICAL = ["carrier", "origin"]
PENALTY = 0.01  # driftline's default elastic-net-family penalty


def holdout_start(times, fraction):
    """driftline_model::split_by_time: the newest rows, no timestamp on both sides."""
    n = len(times)
    start = n - math.ceil(n * fraction)
    at = start
    while at > 0 and times[at - 1] == times[at]:
        at -= 1
    return start if at == 0 else at


def preprocessor():
    return ColumnTransformer([
        ("num", make_pipeline(StandardScaler(),
                              SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=True)),
         NUMERIC),
        ("cat", OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False), CATEGORICAL),
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=125_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    df = pd.read_csv(args.data, nrows=args.rows, dtype={c: str for c in CATEGORICAL},
                     keep_default_na=True)
    # The file is sorted by time; a stable sort keeps ties in file order, as Rust does.
    df["t"] = pd.to_datetime(df["scheduled_departure"], utc=True)
    df = df.sort_values("t", kind="stable").reset_index(drop=True)
    at = holdout_start(df["t"].tolist(), 0.2)
    train, holdout = df.iloc[:at], df.iloc[at:]
    x_train, x_hold = train[NUMERIC + CATEGORICAL], holdout[NUMERIC + CATEGORICAL]
    n = len(train)

    hist_boosting = dict(max_iter=200, learning_rate=0.1, max_depth=6, max_leaf_nodes=None,
                         l2_regularization=1.0, min_samples_leaf=1, early_stopping=False,
                         random_state=0)
    models = {
        "linear": ("arr_delay", LinearRegression()),
        "ridge": ("arr_delay", Ridge(alpha=PENALTY * n)),
        "lasso": ("arr_delay", Lasso(alpha=PENALTY, max_iter=1000, tol=1e-4)),
        "elastic-net": ("arr_delay", ElasticNet(alpha=PENALTY, l1_ratio=0.5, max_iter=1000, tol=1e-4)),
        "logistic": ("late", LogisticRegression(C=1.0, max_iter=200)),
        "random-forest": ("late", RandomForestClassifier(
            n_estimators=20, max_depth=10, max_samples=0.5, min_samples_leaf=5, max_features=None,
            bootstrap=True, n_jobs=args.threads, random_state=42)),
        "boosted-regression": ("arr_delay", HistGradientBoostingRegressor(**hist_boosting)),
        "boosted-classification": ("late", HistGradientBoostingClassifier(**hist_boosting)),
    }
    try:
        import lightgbm
        lgbm = dict(n_estimators=200, learning_rate=0.1, max_depth=6, num_leaves=64,
                    min_child_weight=1.0, min_child_samples=1, reg_lambda=1.0, max_bin=255,
                    n_jobs=args.threads, verbose=-1, random_state=0)
        models["lightgbm-boosted-regression"] = ("arr_delay", lightgbm.LGBMRegressor(**lgbm))
        models["lightgbm-boosted-classification"] = ("late", lightgbm.LGBMClassifier(**lgbm))
        lightgbm_version = lightgbm.__version__
    except ImportError:
        lightgbm_version = None
    out = {"_meta": {"sklearn": sklearn.__version__, "lightgbm": lightgbm_version,
                     "train_rows": n, "holdout_rows": len(holdout)}}
    for name, (target, estimator) in models.items():
        y_train, y_hold = train[target].to_numpy(), holdout[target].to_numpy()
        best, pipe = math.inf, None
        for _ in range(args.reps):
            pipe = Pipeline([("prep", preprocessor()), ("model", clone(estimator))])
            started = time.perf_counter()
            pipe.fit(x_train, y_train)
            best = min(best, time.perf_counter() - started)
        if target == "late":
            proba = pipe.predict_proba(x_hold)
            pred = pipe.classes_[np.argmax(proba, axis=1)]
            metrics = {"accuracy": accuracy_score(y_hold, pred),
                       "log_loss": log_loss(y_hold, proba, labels=pipe.classes_)}
        else:
            pred = pipe.predict(x_hold)
            metrics = {"mae": mean_absolute_error(y_hold, pred),
                       "rmse": math.sqrt(mean_squared_error(y_hold, pred))}
        calls = 200
        started = time.perf_counter()
        for i in range(calls):
            pipe.predict(x_hold.iloc[[i]])
        predict_one_us = (time.perf_counter() - started) / calls * 1e6
        out[name] = {"fit_seconds": best, "metrics": metrics, "predict_one_us": predict_one_us}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
