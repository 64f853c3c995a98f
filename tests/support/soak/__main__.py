"""python -m tests.support.soak"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from syncd.embedded_radicale import EmbeddedRadicale
from tests.support import mutations
from tests.support.caldav_servers import CalDAVServer, XandikosProcess
from tests.support.google_standin import GoogleStandIn
from tests.support.soak.drive import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--therapists", type=int, default=50)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch", type=int, nargs=2, default=(6, 36), metavar=("MIN", "MAX"))
    p.add_argument("--keep", type=Path, help="work in this (new) directory and keep it")
    p.add_argument(
        "--mutation",
        choices=sorted(mutations.MUTATIONS),
        help="run syncd broken this way (tests/support/mutations.py): the verdicts must catch it",
    )
    a = p.parse_args(argv)
    with ExitStack() as stack:
        if a.keep:
            root = a.keep
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncd-soak-")))
        for sub in ("xandikos", "radicale", "work"):
            (root / sub).mkdir()
        xandikos = XandikosProcess(root / "xandikos")
        xandikos.start()
        stack.callback(xandikos.stop)
        rad = stack.enter_context(
            EmbeddedRadicale(root / "radicale", username="therapist", password="s3cret pw")
        )
        google = stack.enter_context(GoogleStandIn())
        servers = [
            CalDAVServer("radicale", rad.url, "therapist", "s3cret pw"),
            CalDAVServer("xandikos", xandikos.url, "user", "unused"),
        ]
        report = run(
            root / "work",
            servers,
            google=google,
            events=a.events,
            therapists=a.therapists,
            kills=a.kills,
            seconds=a.seconds,
            seed=a.seed,
            batch_steps=tuple(a.batch),
            mutation=a.mutation,
        )
    print(report.summary())
    for m in report.mismatches[:50]:
        print("MISMATCH", m)
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
