"""Plots a soak run's samples (the CSV of tests/src/bin/soak.rs) as one PNG of four panels:
throughput, end-to-end latency, RSS per process, state size per directory.

    python tests/soak/plot.py soak.csv docs/soak.png
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{src} has no samples")
    cols = rows[0].keys()
    t = [float(r["t_s"]) / 60 for r in rows]

    def series(name):
        return [float(r[name]) for r in rows]

    fig, ax = plt.subplots(4, 1, figsize=(10, 13), sharex=True)
    ax[0].plot(t, series("requests_per_s"), label="requests in")
    ax[0].plot(t, series("predictions_per_s"), label="predictions out")
    ax[0].set_ylabel("per second")
    ax[0].set_title("throughput")
    ax[1].plot(t, series("p50_ms"), label="p50")
    ax[1].plot(t, series("p99_ms"), label="p99")
    ax[1].set_ylabel("ms")
    ax[1].set_yscale("log")
    ax[1].set_title("end-to-end latency: request produced to prediction readable")
    for c in cols:
        if c.startswith("rss_mb_"):
            ax[2].plot(t, series(c), label=c.removeprefix("rss_mb_"))
        if c.startswith("state_mb_"):
            ax[3].plot(t, series(c), label=c.removeprefix("state_mb_"))
    ax[2].set_ylabel("MB")
    ax[2].set_title("resident memory per process")
    ax[3].set_ylabel("MB")
    ax[3].set_title("state on disk per directory (the broker's: its log)")
    ax[3].set_xlabel("minutes")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
