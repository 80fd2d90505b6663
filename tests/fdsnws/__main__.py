"""``python -m tests.fdsnws --root DIR --port N``: serve a data folder until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from tests.fdsnws.faults import Faults
from tests.fdsnws.server import FDSNService


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.fdsnws", description=__doc__)
    p.add_argument("--root", type=Path, required=True,
                   help="folder with sds/, stations.xml[.gz], events.xml")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument("--unavailable", type=float, default=0.0, help="fraction answered 503")
    p.add_argument("--too-many", type=float, default=0.0, help="fraction answered 429")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After, seconds")
    p.add_argument("--slow", type=float, default=0.0, help="fraction answered late")
    p.add_argument("--slow-seconds", type=float, default=30.0)
    p.add_argument("--truncate", type=float, default=0.0, help="fraction with a cut body")
    p.add_argument("--reset", type=float, default=0.0, help="fraction of reset connections")
    p.add_argument("--max-bulk-lines", type=int, default=None, help="413 above this")
    p.add_argument("--restricted", nargs="*", default=[], metavar="NET",
                   help="networks that need credentials (dataselect queryauth)")  # fmt: skip
    p.add_argument("--user", default="user")
    p.add_argument("--password", default="secret")
    p.add_argument("--token", default=None, help="EIDA token accepted by dataselect/1/auth")
    p.add_argument("--services", nargs="*", default=["dataselect"],
                   choices=["dataselect", "station", "event"],
                   help="services the random faults hit")  # fmt: skip
    hostile = p.add_argument_group("a hostile data centre (every targeted answer)")
    hostile.add_argument("--hostile-station", nargs="*", default=[], metavar="STA=CODE",
                         help="rename station STA to CODE (e.g. ..) in answers")  # fmt: skip
    hostile.add_argument("--redirect", default=None, metavar="URL",
                         help="answer dataselect queries 307 to this base URL")  # fmt: skip
    hostile.add_argument("--trickle-seconds", type=float, default=0.0,
                         help="send dataselect answers one byte per this many seconds")  # fmt: skip
    hostile.add_argument("--trickle-headers", action="store_true",
                         help="with --trickle-seconds: an endless header line instead")  # fmt: skip
    hostile.add_argument("--huge-bytes", type=int, default=0,
                         help="make dataselect answers this many bytes")  # fmt: skip
    hostile.add_argument("--gzip-bomb-bytes", type=int, default=0,
                         help="send gzip bodies that inflate to this many bytes")  # fmt: skip
    hostile.add_argument("--targets", nargs="*", default=[], metavar="STA",
                         help="stations those three hit (default: all)")  # fmt: skip
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the service as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    faults = Faults(
        unavailable=args.unavailable, too_many=args.too_many, retry_after=args.retry_after,
        slow=args.slow, slow_seconds=args.slow_seconds, truncate=args.truncate,
        reset=args.reset, max_bulk_lines=args.max_bulk_lines,
        restricted=tuple(args.restricted), user=args.user, password=args.password,
        token=args.token, services=tuple(args.services),
        hostile_stations=tuple(tuple(x.split("=", 1)) for x in args.hostile_station),
        redirect=args.redirect, trickle_seconds=args.trickle_seconds,
        trickle_headers=args.trickle_headers, huge_bytes=args.huge_bytes,
        gzip_bomb_bytes=args.gzip_bomb_bytes, targets=tuple(args.targets),
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)
    with FDSNService(args.root, faults, seed=args.seed, host=args.host, port=args.port) as svc:
        print(svc.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
