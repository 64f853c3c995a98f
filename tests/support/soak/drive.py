"""Runs the soak: setup, batches through ``syncd ingest``, kills, convergence, verdict."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from tests.conftest import make_config, write_config
from tests.support import mutations
from tests.support.caldav_servers import CalDAVServer
from tests.support.google_standin import GoogleStandIn
from tests.support.proc import jsonl, run_syncd, start_syncd
from tests.support.soak import google_actions, verdict
from tests.support.soak.checks import (
    check,
    check_foreign,
    check_offers,
    check_outbox,
    converged,
    refusals,
    release_lags,
    tracebacks,
)
from tests.support.soak.report import Report
from tests.support.soak.workload import (
    CLIENT_ID,
    CLIENT_SECRET,
    WEBHOOK_SECRET,
    Workload,
    parse_instant,
)
from tests.support.soak.world import (
    FaultSwitch,
    GoogleTarget,
    Receiver,
    World,
    free_port,
    scrape_passes,
    setup,
)


def run(
    workdir: Path,
    servers: list[CalDAVServer],
    *,
    google: GoogleStandIn | None = None,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    seed: int = 7,
    fault_rate: float = 0.05,
    batch_steps: tuple[int, int] = (4, 20),
    log: Callable[[str], object] = print,
    mutation: str | None = None,
) -> Report:
    """``batch_steps``: how many workload steps (one to three events each) go into one
    ``syncd ingest`` run, at random between the two bounds. ``seconds`` is a deadline, not a
    budget: the run does ``events`` and ``kills`` whatever the machine's speed, and reaching
    the deadline first is a mismatch. ``mutation``: run the ``syncd`` processes broken by
    that mutation of tests/support/mutations.py (to see the verdicts catch it)."""
    t0 = time.monotonic()
    report = Report()
    with ExitStack() as stack:
        if mutation is not None:
            stack.enter_context(mutated_processes(mutation))
        faults = FaultSwitch(seed, fault_rate)
        stack.callback(faults.close)
        receiver = Receiver()
        stack.callback(receiver.close)
        via = {}
        for srv in servers:
            proxy = faults.proxy(srv.kind, srv.url)
            via[srv.url] = urljoin(proxy.url, urlsplit(srv.url).path)
        hook = faults.proxy("webhook", receiver.url)
        secret = workdir / "webhook.secret"
        secret.write_bytes(WEBHOOK_SECRET)
        port = free_port()
        sections: dict[str, Any] = {
            "sync": {"interval": 2},
            "offers": {"sweep_interval": 0.5},
            "http": {"port": port},
            "platform": {
                "webhook_url": hook.url + "hook",
                "webhook_secret_file": str(secret),
                "timeout": 5,
                "retry_base": 0.2,
                "retry_cap": 2,
                "poll_interval": 0.5,
                "batch": 200,
            },
        }
        target: GoogleTarget | None = None
        if google is not None:
            gproxy = faults.proxy("google", google.root_url)
            target = GoogleTarget(google, gproxy.url)
            client_secret = workdir / "google.secret"
            client_secret.write_text(CLIENT_SECRET)
            sections["google"] = {
                "client_id": CLIENT_ID,
                "client_secret_file": str(client_secret),
                "api_url": gproxy.url,
                "token_url": gproxy.url + "token",  # token refreshes meet the faults too
                "auth_url": google.auth_url,
                "revoke_url": google.revoke_url,
                "timeout": 10,
                "min_request_interval": 0,
            }
        cfg = make_config(workdir / "state", **sections)
        path = write_config(workdir / "syncd.toml", cfg)
        world = World(cfg, path, port, faults, receiver, servers, via, target)
        try:
            _drive(
                workdir,
                world,
                report,
                seed,
                events,
                therapists,
                kills,
                seconds,
                batch_steps,
                t0,
                log,
            )
        finally:
            report.faults = faults.counts()
            report.deliveries = sum(receiver.ids.values())
            report.torn_posts = receiver.torn
    report.seconds = time.monotonic() - t0
    return report


def _drive(
    workdir: Path,
    world: World,
    report: Report,
    seed: int,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    batch_steps: tuple[int, int],
    t0: float,
    log: Callable[[str], object],
) -> None:
    rng = random.Random(seed)
    work = Workload(rng, therapists)
    setup(world, report, work)
    log(f"set up {therapists} therapists in {time.monotonic() - t0:.1f}s")
    edits = random.Random(f"{seed}/edits")
    runlog = workdir / "run.log"
    world.faults.on = True
    batches = 0
    kill_times: list[datetime] = []
    stored: dict[str, datetime] = {}  # offer id -> when ingest had stored it (at the latest)
    with daemon(world.path, runlog) as proc:
        # The workload is a count (events and kills), whatever the machine's speed; ``seconds``
        # is only a deadline, and reaching it is a failure, not a shorter run.
        while report.events < events or report.kills < kills:
            if time.monotonic() - t0 > seconds:
                report.mismatches.append(
                    f"deadline of {seconds:.0f}s reached after {report.events} of {events} "
                    f"events and {report.kills} of {kills} kills"
                )
                break
            # batches are made just before they are sent: offer expiries are real time
            batch: list[dict[str, Any]] = []
            for _ in range(rng.randint(*batch_steps)):
                batch.extend(work.next())
            work.stale(batch, report)
            predicted = work.predict(batch, datetime.now(UTC))
            out = run_syncd(world.path, "ingest", "-", stdin=jsonl(batch))
            report.events += len(batch)
            batches += 1
            if out.returncode not in (0, 1) or "Traceback" in out.stderr:
                raise AssertionError(f"ingest failed: {out.stderr}")
            refused = refusals(out.stderr, work, report)
            counts = verdict.answer_counts(out.stdout)
            report.answers += counts
            report.mismatches += verdict.check_answers(batch, predicted, counts, refused)
            done = datetime.now(UTC)
            for ev in batch:
                if ev["type"] == "offer.upserted" and ev["data"]["state"] == "pending":
                    stored.setdefault(ev["data"]["id"], done)
            if world.calendars and batches % 3 == 1:
                tid = edits.choice(sorted(world.calendars))
                touched = verdict.hand_edit(edits, *world.calendars[tid])
                if touched:
                    report.hand_edits[touched] += 1
            elif world.google and world.google_calendars:
                g = world.google
                acted = google_actions.act(
                    edits, g.standin, g.service, world.google_calendars, report.google_actions
                )
                if acted:
                    report.google_actions[acted] += 1
            if batches % 10 == 0:
                log(f"{report.events} events, {report.kills} kills, {time.monotonic() - t0:.0f}s")
            left = max(1.0, (events - report.events) / (report.events / batches))
            if report.kills < kills and rng.random() < (kills - report.kills) / left:
                time.sleep(rng.uniform(0, 0.8))  # a random moment, often mid-pass
                report.passes += scrape_passes(world.port)
                kill_times.append(datetime.now(UTC))
                proc[0].send_signal(signal.SIGKILL)
                proc[0].wait(timeout=10)
                report.kills += 1
                proc[0] = start_syncd(world.path, "run", log=runlog)
        # faults off; let every left-to-expire offer pass its expiry, then wait for one quiet
        # pass of every therapist and convergence
        world.faults.on = False
        quiet_from = datetime.now(UTC)
        last_expiry = max(
            (parse_instant(o["expires_at"]) for o in work.expiring), default=quiet_from
        )
        time.sleep(max(0.0, (last_expiry - datetime.now(UTC)).total_seconds()) + 2)
        deadline = time.monotonic() + max(60.0, seconds - (time.monotonic() - t0))
        expiring = [o["id"] for o in work.expiring]
        shown = time.monotonic()
        while True:
            report.checks += 1
            pending = converged(world, expiring, quiet_from, work.model.platform)
            if not pending or time.monotonic() > deadline:
                break
            if time.monotonic() - shown > 30:  # what it still waits for, now and then
                shown = time.monotonic()
                log(f"waiting for convergence: {len(pending)} left, first: {pending[0]}")
            time.sleep(1)
        report.passes += scrape_passes(world.port)
        proc[0].send_signal(signal.SIGTERM)
        proc[0].wait(timeout=30)
        # A notification written just before the stop waits in the outbox for the next start
        # (at least once, not at once): start again until the outbox is empty.
        while check_outbox(world.cfg, world.receiver)[1] and time.monotonic() < deadline + 60:
            report.final_restarts += 1
            proc[0] = start_syncd(world.path, "run", log=runlog)
            until = time.monotonic() + 30
            while check_outbox(world.cfg, world.receiver)[1] and time.monotonic() < until:
                time.sleep(1)
            report.passes += scrape_passes(world.port)
            proc[0].send_signal(signal.SIGTERM)
            proc[0].wait(timeout=30)
    # the final verdict, with the daemon stopped
    report.mismatches += check(world.cfg, world.behind, world.google, work.model.platform)
    report.mismatches += check_foreign(world)
    report.mismatches += verdict.check_stored_answers(world.cfg, work.expect)
    released, problems = check_offers(world.cfg, expiring)
    report.mismatches += problems
    report.expired_offers = len(released)
    report.notifications, problems = check_outbox(world.cfg, world.receiver)
    report.mismatches += problems
    for event_id, rule in work.negatives.items():
        report.negatives_sent[rule] += 1
        if event_id not in work.refused:
            report.mismatches.append(f"intended negative {event_id} ({rule}) was not refused")
    text = runlog.read_text()
    report.release_lag, report.release_after_restart = release_lags(
        released, stored, kill_times, text
    )
    for key, (n, first) in tracebacks(text).items():
        report.mismatches.insert(0, f"{n} tracebacks in the daemon log: {key}\n{first}")
    report.passes_with_changes = len(re.findall(r": [1-9][0-9]*/[0-9]+ actions applied", text))
    report.duplicates_sent = work.duplicates
    report.offers = dict(work.fates)


@contextmanager
def mutated_processes(name: str) -> Iterator[None]:
    """Every ``syncd`` process started meanwhile loads tests/support/mutation_hook/sitecustomize.py,
    which applies mutation ``name``."""
    assert name in mutations.MUTATIONS, name
    root = Path(__file__).resolve().parents[3]  # the checkout: tests/support/soak/ is three down
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", mutations.ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(mutations.HOOK_DIR), str(root), *filter(None, [saved["PYTHONPATH"]])]
    )
    os.environ[mutations.ENV] = name
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def daemon(path: Path, runlog: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The running ``syncd run`` (replaced in place on restart), killed if left running."""
    holder = [start_syncd(path, "run", log=runlog)]
    try:
        yield holder
    finally:
        if holder[0].poll() is None:
            holder[0].kill()
            holder[0].wait()
