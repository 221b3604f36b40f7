#!/usr/bin/env python3
"""Checks of deploy/container/compose.yaml that its JSON schema cannot make.

  - every depends_on names a service; a service_healthy dependency has a
    healthcheck; the migrate job runs once (restart "no") and every service
    running the image waits for it (service_completed_successfully);
  - the worker scales (`--scale worker=N`): no container_name, no host port;
  - every published port is bound to 127.0.0.1 (the test secret is public);
  - every bind-mounted path exists in the repository;
  - Prometheus scrapes every service that serves metrics (by the name
    compose gives it), and loads the alert rules it mounts.

Usage: compose.py COMPOSE_FILE PROMETHEUS_CONFIG
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

APP_IMAGE = "idv-pipeline:local"
MIGRATE = "migrate"
SCALABLE = "worker"
METRICS_PORTS = {"ingest": 9464, "worker": 9465, "dispatcher": 9465, "rabbitmq": 15692}


def main(argv: list[str]) -> int:
    compose_path = Path(argv[1])
    prometheus_path = Path(argv[2])
    compose = yaml.safe_load(compose_path.read_text(encoding="utf-8"))
    prometheus = yaml.safe_load(prometheus_path.read_text(encoding="utf-8"))
    services: dict[str, dict] = compose.get("services", {})
    errors: list[str] = []

    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, how in depends.items():
            if target not in services:
                errors.append(f"{name}: depends on {target!r}, which is no service")
                continue
            if how.get("condition") == "service_healthy" and "healthcheck" not in services[target]:
                errors.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
        runs_app = service.get("image") == APP_IMAGE
        if runs_app and name != MIGRATE:
            if depends.get(MIGRATE, {}).get("condition") != "service_completed_successfully":
                errors.append(f"{name}: must wait for {MIGRATE} (condition service_completed_successfully)")
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published', '')}"
            if not str(text).startswith("127.0.0.1:"):
                errors.append(f"{name}: port {port!r} is not bound to 127.0.0.1 (the webhook test secret is public)")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                if not (compose_path.parent / source).exists():
                    errors.append(f"{name}: bind mount {source} does not exist (relative to {compose_path.parent})")

    if MIGRATE not in services:
        errors.append(f"no {MIGRATE} service (idvctl migrate && idvctl topology)")
    elif services[MIGRATE].get("restart", "no") != "no":
        errors.append(f"{MIGRATE}: a one-shot job must not restart (restart: \"no\")")
    worker = services.get(SCALABLE)
    if worker is None:
        errors.append(f"no {SCALABLE} service")
    else:
        if "container_name" in worker:
            errors.append(f"{SCALABLE}: container_name stops `--scale {SCALABLE}=N` (one name, one container)")
        if worker.get("ports"):
            errors.append(f"{SCALABLE}: a host port stops `--scale {SCALABLE}=N` (one port, one container)")
    dispatchers = [n for n, s in services.items() if "--dispatcher-only" in (s.get("command") or [])]
    if len(dispatchers) != 1:
        errors.append(f"expected one service running `idv-worker --dispatcher-only`, found {dispatchers}")

    # Prometheus: every metrics endpoint scraped, the rules loaded.
    targets: set[str] = set()
    for job in prometheus.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            targets.update(static.get("targets", []))
        for dns in job.get("dns_sd_configs", []):
            targets.update(f"{n}:{dns.get('port')}" for n in dns.get("names", []))
    for name, port in METRICS_PORTS.items():
        if name in services and f"{name}:{port}" not in targets:
            errors.append(f"{prometheus_path.name}: does not scrape {name}:{port}")
    if worker is not None and not any(
        SCALABLE in d.get("names", []) for j in prometheus.get("scrape_configs", []) for d in j.get("dns_sd_configs", [])
    ):
        errors.append(f"{prometheus_path.name}: scrapes {SCALABLE} without DNS discovery, so only one of its replicas")
    mounted = {
        Path(v.split(":")[1]).name
        for v in services.get("prometheus", {}).get("volumes", [])
        if isinstance(v, str) and v.startswith(".")
    }
    for rules in prometheus.get("rule_files", []):
        if Path(rules).name not in mounted:
            errors.append(f"{prometheus_path.name}: rule file {rules} is not mounted into the prometheus service")

    for error in errors:
        print(f"error: {compose_path.name}: {error}")
    if errors:
        return 1
    print(f"ok: {compose_path.name}: {len(services)} services, references, mounts, ports and scrape targets consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
