"""SIGKILL of a lease holder: seconds until another instance answers its tile.

Starts on 127.0.0.1 moto's S3 server and a WMS that answers every GetMap
``--wms-seconds`` late (`tests/faultwms.py`); then, per run, two instances of the
service (gunicorn, Procfile command) on one bucket: A takes a metatile's lease and
sends its GetMap, B waits on the lease, A is killed with SIGKILL
(`tests/takeover.py`). Prints, per run, the seconds from the kill to B's answer and
the GetMaps that followed the kill, then the median and the spread.

    python bench/lease_takeover.py --runs 3

Run from the repository root, with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faultwms import FaultWMS  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, MotoServer  # noqa: E402
from tests.takeover import sigkill_holder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wms-seconds", type=float, default=4.0, help="GetMap delay")
    parser.add_argument("--lease-seconds", type=float, default=6.0, help="LEASE_SECONDS")
    args = parser.parse_args()
    os.environ.update(MOTO_CREDENTIALS)
    moto = MotoServer().start()
    wms = FaultWMS(mode="slow", slow_seconds=args.wms_seconds).start()
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    took: list[float] = []
    try:
        print(f"WMS {args.wms_seconds:g} s late, LEASE_SECONDS={args.lease_seconds:g}")
        print(f"{'run':>3} {'status':>6} {'s after kill':>12} {'GetMaps after':>13}")
        for run in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory() as tmp:
                result = sigkill_holder(moto.url, s3, wms, Path(tmp), args.lease_seconds)
            took.append(result.answered_after_kill)
            print(
                f"{run:>3} {result.status:>6} {result.answered_after_kill:>12.2f} "
                f"{result.getmaps_after_kill:>13}"
            )
    finally:
        wms.stop()
        moto.stop()
    print(
        f"median {statistics.median(took):.2f} s, spread {min(took):.2f}-{max(took):.2f} s "
        f"over {len(took)} runs"
    )


if __name__ == "__main__":
    main()
