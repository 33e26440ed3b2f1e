#!/usr/bin/env python3
"""Writes data/car_loan.csv.gz from NannyML's synthetic car-loan data set (Apache-2.0).

    pip install nannyml==0.13.1 statsmodels
    python3 data/prepare_car_loan.py            # writes data/car_loan.csv.gz, prints the change

NannyML ships the set to show its own detectors: 50,000 reference rows and 50,000 analysis
rows of car loans, with whether each was repaid and NannyML's own model's predicted
probability. The analysis targets come separately; they are joined back by id. The data's
drift is documented by NannyML to start with the analysis' sixth chunk of 5,000, i.e. at
analysis row 25,000: this script prints that row's timestamp (the `--change-at` of the
backtest in docs/DETECTION.md). Rows stay in NannyML's order (time order); timestamps are
written as RFC 3339 in UTC, other floats rounded to 6 decimals; the gzip header carries no
name or time.
"""

import csv
import gzip
import io
import sys

COLUMNS = [
    "id",
    "timestamp",
    "car_value",
    "salary_range",
    "debt_to_income_ratio",
    "loan_length",
    "repaid_loan_on_prev_car",
    "size_of_downpayment",
    "driver_tenure",
    "repaid",
    "y_pred_proba",
    "y_pred",
]


def rfc3339(ts):
    # "2018-01-01 00:17:26.304" -> "2018-01-01T00:17:26.304Z"
    return ts.replace(" ", "T") + "Z"


def main():
    try:
        import nannyml as nml
    except ImportError:
        sys.exit("needs the nannyml package: pip install nannyml==0.13.1 statsmodels")
    reference, analysis, targets = nml.load_synthetic_car_loan_dataset()
    analysis = analysis.merge(targets, on="id", how="left", validate="one_to_one")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    rows = 0
    for frame in (reference, analysis):
        for r in frame[COLUMNS].itertuples(index=False):
            out = []
            for name, v in zip(COLUMNS, r):
                if name == "timestamp":
                    out.append(rfc3339(str(v)))
                elif name in ("repaid", "y_pred", "loan_length", "car_value"):
                    out.append("" if v != v else str(int(v)))
                elif isinstance(v, float):
                    out.append("" if v != v else repr(round(v, 6)))
                else:
                    out.append(str(v))
            w.writerow(out)
            rows += 1
    with open("data/car_loan.csv.gz", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(buf.getvalue().encode())
    print(f"wrote data/car_loan.csv.gz: {rows} rows")
    print(f"reference ends {rfc3339(str(reference['timestamp'].iloc[-1]))}")
    print(f"change (analysis row 25,000) at {rfc3339(str(analysis['timestamp'].iloc[25000]))}")


if __name__ == "__main__":
    main()
