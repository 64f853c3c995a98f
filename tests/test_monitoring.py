"""The monitoring examples in monitoring/ hold up: the Prometheus alert rules parse and name only
metrics a real daemon's /metrics serves, and so does the Grafana dashboard (promtool is not
available here, so the rules are read with a YAML parser and checked against real output)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncd import operations
from syncd.app import App
from syncd.daemon import Daemon
from syncd.metrics import iter_samples
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, unused_port
from tests.support.http_daemon import with_http_daemon
from tests.support.proc import wait_for

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "monitoring" / "prometheus" / "syncd-alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "syncd-dashboard.json"
NAME = re.compile(r"\b(syncd_[a-z0-9_]+)\b")
# Series Prometheus makes itself, not served by the target.
PROMETHEUS_OWN = {"up"}


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Syncd") and rule["expr"].strip()
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
        assert rule["annotations"]["summary"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
    return [str(rule["expr"]) for rule in rules]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] == "syncd" and doc["panels"]
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    return exprs


def served_names(tmp_path: Path, server: CalDAVServer) -> set[str]:
    """Sample names of a real daemon's /metrics after passes that succeeded and failed."""
    app = App.open(make_config(tmp_path / "state"))
    try:
        for tid in ("t-ok", "t-down"):
            assert app.ingestor().ingest(f.therapist(tid)).ok
            assert app.ingestor().ingest(f.session(f"s-{tid}", f.future(), therapist_id=tid)).ok
        operations.connect_caldav(
            app, "t-ok", url=server.url, username=server.username, password=server.password
        )
        operations.connect_caldav(
            app,
            "t-down",
            url=f"http://127.0.0.1:{unused_port()}/",
            username="u",
            password="p",
            verify=False,
        )

        def scrape(_daemon: Daemon, url: str) -> set[str]:
            def both_outcomes() -> set[str] | None:
                text = httpx.get(f"{url}/metrics", timeout=10).text
                samples = list(iter_samples(text))
                outcomes = {
                    labels.get("outcome")
                    for name, labels, _ in samples
                    if name == "syncd_pass_duration_seconds_count"
                }
                if not {"ok", "error"} <= outcomes:
                    return None
                # A gauge with no sample right now (no lease held at this scrape) is served too.
                gauges = {
                    family.name
                    for family in text_string_to_metric_families(text)
                    if family.type == "gauge"
                }
                return {name for name, _, _ in samples} | gauges

            return wait_for(both_outcomes, 90, "an ok and a failed pass in /metrics", 0.2)

        return with_http_daemon(app, scrape, timeout=60)
    finally:
        app.close()


def test_alert_rules_and_dashboard_name_only_served_metrics(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    wanted: dict[str, str] = {}
    for source, exprs in (("alert rules", rule_exprs()), ("dashboard", dashboard_exprs())):
        for expr in exprs:
            for name in NAME.findall(expr):
                wanted[name] = source
    served = served_names(tmp_path, radicale_server)
    missing = {name: where for name, where in wanted.items() if name not in served}
    assert missing == {}, f"not in /metrics: {missing}; served: {sorted(served)}"
    # Every family syncd serves is watched by a rule or shown on the dashboard.
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in served}
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in wanted}
    assert {n for n in families if n.startswith("syncd_")} - shown - {"syncd_replica_info"} == set()


def test_rules_use_only_prometheus_series_or_syncd_metrics() -> None:
    for expr in rule_exprs():
        # The selectors: a name directly followed by { or used bare in a comparison.
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)\{", expr):
            assert name.startswith("syncd_") or name in PROMETHEUS_OWN, (name, expr)
