#!/usr/bin/env python3
"""Structure of the Grafana dashboard and its provisioning.

  - the dashboard is JSON with a uid, a title and a schemaVersion; panel ids
    are unique; every panel sits inside the 24-column grid and no two
    overlap;
  - every query panel uses the `${datasource}` variable (a Prometheus
    datasource variable), has at least one target with an expression and
    distinct refIds;
  - the panels the issue asks for are there (matched by the metric each
    one queries);
  - the datasource provisioning has a Prometheus datasource whose uid is the
    variable's default, and the dashboard provider reads the directory
    compose.yaml mounts the dashboards into.

Usage: dashboard.py DASHBOARD.json PROVISIONING_DIR COMPOSE_FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

# What the dashboard must show, each as a metric some panel queries.
REQUIRED = {
    "ingest rate and outcomes": "idv_ingest_requests_total",
    "ingest latency": "idv_ingest_publish_duration_seconds_bucket",
    "signature failures by reason": "idv_ingest_signature_failures_total",
    "verification outcomes": "idv_worker_events_total",
    "failed attempts by code": "idv_worker_failed_attempts_total",
    "subjects reaching the limit": "idv_worker_subjects_manual_review_total",
    "queue and DLQ depth": "idv_worker_queue_messages",
    "dead letters waiting": "idv_worker_dead_letters_waiting",
    "oldest dead letter": "idv_worker_dead_letter_oldest_age_seconds",
    "outbox pending": "idv_worker_outbox_oldest_pending_seconds",
    "outbox failed": "idv_worker_outbox_actions_total",
    "consumer lag": "idv_worker_consumer_lag_seconds",
}


def main(argv: list[str]) -> int:
    dashboard_path, provisioning, compose_path = Path(argv[1]), Path(argv[2]), Path(argv[3])
    errors: list[str] = []
    try:
        dashboard = json.loads(dashboard_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        print(f"error: {dashboard_path.name}: not JSON: {e}")
        return 1
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            errors.append(f"no {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource")
    if not datasource or datasource.get("type") != "datasource" or datasource.get("query") != "prometheus":
        errors.append("no `datasource` variable of type datasource (query prometheus)")
    default_uid = ((datasource or {}).get("current") or {}).get("value")

    panels: list[dict] = []

    def walk(items: list[dict]) -> None:
        for item in items:
            panels.append(item)
            walk(item.get("panels", []))

    walk(dashboard.get("panels", []))
    ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    queried = ""
    for panel in panels:
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            errors.append(f"panel {title!r}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "xywh"):
            errors.append(f"panel {title!r}: no gridPos")
            continue
        if grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            errors.append(f"panel {title!r}: outside the 24-column grid ({grid})")
        for dx in range(grid["w"]):
            for dy in range(grid["h"]):
                cell = (grid["x"] + dx, grid["y"] + dy)
                if cell in cells:
                    errors.append(f"panel {title!r} overlaps panel {cells[cell]!r}")
                    break
                cells[cell] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            errors.append(f"panel {title!r}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr") for t in targets):
            errors.append(f"panel {title!r}: a target without an expression")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            errors.append(f"panel {title!r}: refIds repeat ({refs})")
        for target in targets:
            if (target.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                errors.append(f"panel {title!r} {target.get('refId')}: datasource is not the ${{datasource}} variable")
            queried += " " + target.get("expr", "")
    for what, metric in REQUIRED.items():
        if metric not in queried:
            errors.append(f"no panel for {what} (no query of {metric})")

    # Provisioning.
    datasources = []
    for path in sorted((provisioning / "datasources").glob("*.y*ml")):
        datasources += yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", [])
    if not any(d.get("type") == "prometheus" and d.get("uid") == default_uid for d in datasources):
        errors.append(f"provisioning: no Prometheus datasource with uid {default_uid!r} (the variable's default)")
    compose = yaml.safe_load(compose_path.read_text(encoding="utf-8"))
    mounts = {}
    for volume in compose["services"].get("grafana", {}).get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (compose_path.parent / source).resolve()
    providers = []
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(path.read_text(encoding="utf-8")).get("providers", [])
    for provider in providers:
        where = provider.get("options", {}).get("path")
        if mounts.get(where) != dashboard_path.parent.resolve():
            errors.append(f"provisioning: provider {provider.get('name')!r} reads {where}, where compose does not mount {dashboard_path.parent}")
    if not providers:
        errors.append("provisioning: no dashboard provider")
    if mounts.get("/etc/grafana/provisioning") != provisioning.resolve():
        errors.append(f"compose does not mount {provisioning} at /etc/grafana/provisioning")

    for error in errors:
        print(f"error: {dashboard_path.name}: {error}")
    if errors:
        return 1
    print(f"ok: {dashboard_path.name}: {len(panels)} panels laid out, every one on ${{datasource}}, "
          f"all {len(REQUIRED)} required views present, provisioning consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
