#!/usr/bin/env python3
"""The scikit-learn side of `model bench`: standardize, then KMeans, on the same CSV.

Called by `model bench` with the same k, number of initialisations (n_init), maximum
iterations, tolerance and (with --threads) thread count as the Rust side; prints one JSON object with the wall
time of each repeat. Reading the CSV is not timed (it is not timed on the Rust side either).

Needs python3 with scikit-learn (`pip install scikit-learn`).
"""

import argparse
import contextlib
import json
import os
import time

import numpy as np
import sklearn
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--n-init", type=int, required=True)
    parser.add_argument("--max-iter", type=int, required=True)
    parser.add_argument("--tol", type=float, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threads", type=int, default=None, help="limit OpenMP and BLAS to this many threads"
    )
    args = parser.parse_args()

    data = np.loadtxt(args.input, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    limits = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=args.threads)
    with limits:
        seconds, inertia, threads = fit(data, args)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "inertia": inertia,
                "sklearn_version": sklearn.__version__,
                "threads": threads,
            }
        )
    )


def fit(data, args):
    """Times `repeats` standardize + KMeans fits; also returns the inertia and thread count."""
    seconds = []
    inertia = float("nan")
    for _ in range(args.repeats):
        start = time.perf_counter()
        scaled = StandardScaler().fit_transform(data)
        fitted = KMeans(
            n_clusters=args.k,
            init="k-means++",
            n_init=args.n_init,
            max_iter=args.max_iter,
            tol=args.tol,
            algorithm="lloyd",
            random_state=args.seed,
        ).fit(scaled)
        seconds.append(time.perf_counter() - start)
        inertia = float(fitted.inertia_) / len(data)

    try:
        from threadpoolctl import threadpool_info

        threads = max((pool["num_threads"] for pool in threadpool_info()), default=None)
    except ImportError:
        threads = os.cpu_count()
    return seconds, inertia, threads


if __name__ == "__main__":
    main()
