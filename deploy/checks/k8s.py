#!/usr/bin/env python3
"""Checks of a rendered kustomize overlay (kubectl kustomize OVERLAY), and
splits it for the schema validators.

Policy (what an SRE reviewing the manifests would ask for):
  - no Secret is rendered, and no secret setting (URLs, keys, webhook
    secrets) is written inline: each comes from a secretKeyRef;
  - every container: CPU and memory requests and limits; non-root,
    read-only root filesystem, no privilege escalation, ALL capabilities
    dropped, RuntimeDefault seccomp; an image with a tag other than latest;
  - every long-running workload: readiness on /readyz and liveness on
    /healthz on its admin port (9464 ingest, 9465 worker and dispatcher);
  - terminationGracePeriodSeconds longer than the drain its settings give:
    ingest INGEST_SHUTDOWN_DELAY_MS + INGEST_BODY_TIMEOUT_MS +
    INGEST_PUBLISH_TIMEOUT_MS (rounded up, + 1 s); the dispatcher half of
    DISPATCH_LEASE_SECS; each with 5 s to spare;
  - NetworkPolicies: every pipeline pod selected; the only port open to all
    is the webhook port (4242), admin ports only to the monitoring namespace;
  - a Deployment scaled by an HPA or a ScaledObject sets no replicas.
References: scale targets, authentication refs, ConfigMaps, Services' and
NetworkPolicies' (named) ports and every selector resolve to something the
overlay renders. RabbitmqCluster: an odd number of nodes, at least 3 in
production (a quorum queue needs a majority).

Usage: k8s.py RENDERED.yaml OVERLAY_NAME OUT_DIR
Writes OUT_DIR/builtin.yaml (Kubernetes' own kinds, for kubernetes-validate)
and OUT_DIR/crd/<schema>/<n>.yaml (one custom resource per file, for
check-jsonschema with deploy/k8s/crd-schemas/<schema>.schema.json).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import yaml

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmqcluster",
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-cluster",
}
SECRET_SETTINGS = {
    "STRIPE_WEBHOOK_SECRET", "AMQP_URL", "DATABASE_URL", "STRIPE_API_KEY",
    "OUTCOME_WEBHOOK_SECRET", "SMTP_URL",
}
ADMIN_PORTS = {"ingest": 9464, "worker": 9465, "dispatcher": 9465}
WEBHOOK_PORT = 4242
MONITORING_NAMESPACE = "monitoring"
SPARE_SECONDS = 5
INGEST_DEFAULTS = {"INGEST_SHUTDOWN_DELAY_MS": 3000, "INGEST_BODY_TIMEOUT_MS": 5000, "INGEST_PUBLISH_TIMEOUT_MS": 5000}
DISPATCH_DEFAULTS = {"DISPATCH_LEASE_SECS": 60}


def matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def policy(docs: list[dict], overlay: str, error) -> None:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("Job", [])
    pods = [(w, w["spec"]["template"]) for w in workloads]

    for secret in by_kind.get("Secret", []):
        error(secret, "a Secret in the manifests: secret values never live in the repository (see secret.example.yaml)")
    for name, data in configmaps.items():
        for key in SECRET_SETTINGS & set(data):
            error(None, f"ConfigMap/{name}: {key} is a secret; it belongs in the Secret")

    scaled = {
        (d["spec"]["scaleTargetRef"].get("kind", "Deployment"), d["spec"]["scaleTargetRef"]["name"])
        for d in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])
    }
    for doc in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", []):
        target = doc["spec"]["scaleTargetRef"]
        if not any(w["kind"] == target.get("kind", "Deployment") and w["metadata"]["name"] == target["name"] for w in workloads):
            error(doc, f"scales {target.get('kind', 'Deployment')}/{target['name']}, which the overlay does not render")
        low = doc["spec"].get("minReplicas", doc["spec"].get("minReplicaCount", 1))
        high = doc["spec"].get("maxReplicas", doc["spec"].get("maxReplicaCount"))
        if high is not None and low > high:
            error(doc, f"minimum {low} above maximum {high}")
    authentications = {d["metadata"]["name"] for d in by_kind.get("TriggerAuthentication", [])}
    for doc in by_kind.get("ScaledObject", []):
        for trigger in doc["spec"].get("triggers", []):
            ref = (trigger.get("authenticationRef") or {}).get("name")
            if ref and (trigger["authenticationRef"].get("kind", "TriggerAuthentication") == "TriggerAuthentication") and ref not in authentications:
                error(doc, f"authenticationRef {ref} is no TriggerAuthentication of the overlay")
            if trigger.get("type") == "rabbitmq":
                metadata = trigger.get("metadata", {})
                if metadata.get("queueName") != "idv.events":
                    error(doc, f"scales on queue {metadata.get('queueName')!r}, not idv.events")
                if "host" in metadata and "@" in metadata["host"]:
                    error(doc, "the trigger's host carries credentials inline; take it from a TriggerAuthentication")

    for workload, template in pods:
        spec = template["spec"]
        component = template["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        long_running = workload["kind"] == "Deployment"
        if long_running and (workload["kind"], workload["metadata"]["name"]) in scaled and "replicas" in workload["spec"]:
            error(workload, "sets replicas while an autoscaler owns them (every apply would reset the count)")
        pod_security = spec.get("securityContext", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"container {container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            if security.get("runAsNonRoot") is not True:
                error(workload, f"{where}: runAsNonRoot is not true")
            if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                error(workload, f"{where}: readOnlyRootFilesystem is not true")
            if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                error(workload, f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in (container.get("securityContext", {}).get("capabilities", {}).get("drop") or []):
                error(workload, f"{where}: capabilities do not drop ALL")
            if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                error(workload, f"{where}: no RuntimeDefault seccomp profile")
            image = container.get("image", "")
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image or image.endswith(":latest"):
                error(workload, f"{where}: image {image!r} has no fixed tag")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        error(workload, f"{where}: no {part}.{resource}")
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                ref = (source.get("configMapRef") or {}).get("name")
                if ref is not None:
                    if ref not in configmaps:
                        error(workload, f"{where}: envFrom ConfigMap {ref} is not rendered")
                    else:
                        env.update(configmaps[ref])
            for variable in container.get("env", []):
                if variable["name"] in SECRET_SETTINGS:
                    if "value" in variable or "secretKeyRef" not in (variable.get("valueFrom") or {}):
                        error(workload, f"{where}: {variable['name']} must come from a secretKeyRef, never inline")
                if "value" in variable:
                    env[variable["name"]] = variable["value"]
                    if re.search(r"://[^/@\s]+:[^/@\s]+@", variable["value"]):
                        error(workload, f"{where}: {variable['name']} holds a URL with a password")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if long_running and component in ADMIN_PORTS:
                admin = ADMIN_PORTS[component]
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    get = (container.get(probe) or {}).get("httpGet")
                    if not get:
                        error(workload, f"{where}: no {probe} (HTTP GET {path})")
                        continue
                    port = ports.get(get["port"], get["port"])
                    if get.get("path") != path or port != admin:
                        error(workload, f"{where}: {probe} is GET {get.get('path')} on port {port}, expected {path} on {admin}")
            # Grace longer than the drain.
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if component == "ingest":
                values = {k: int(env.get(k, v)) for k, v in INGEST_DEFAULTS.items()}
                drain = (
                    values["INGEST_SHUTDOWN_DELAY_MS"] / 1000
                    + math.ceil((values["INGEST_BODY_TIMEOUT_MS"] + values["INGEST_PUBLISH_TIMEOUT_MS"]) / 1000)
                    + 1
                )
                if grace < drain + SPARE_SECONDS:
                    error(workload, f"terminationGracePeriodSeconds {grace} is not {SPARE_SECONDS} s longer than the drain ({drain:g} s from {values})")
            if component in ("dispatcher", "worker") and long_running:
                lease = int(env.get("DISPATCH_LEASE_SECS", DISPATCH_DEFAULTS["DISPATCH_LEASE_SECS"]))
                role = env.get("WORKER_ROLE", "dispatcher" if "--dispatcher-only" in container.get("command", []) else "all")
                if role in ("dispatcher", "all") and grace < lease / 2 + SPARE_SECONDS:
                    error(workload, f"terminationGracePeriodSeconds {grace} is not {SPARE_SECONDS} s longer than half of DISPATCH_LEASE_SECS ({lease})")

    # Selectors and named ports resolve.
    def selected(selector: dict) -> list[tuple[dict, dict]]:
        return [(w, t) for w, t in pods if matches(selector, t["metadata"].get("labels", {}))]

    def port_number(template: dict, port: int | str) -> int | None:
        if isinstance(port, int):
            return port
        for container in template["spec"]["containers"]:
            for declared in container.get("ports", []):
                if declared.get("name") == port:
                    return declared["containerPort"]
        return None

    for service in by_kind.get("Service", []):
        targets = selected({"matchLabels": service["spec"].get("selector", {})})
        if not targets:
            error(service, "selects no pod")
        for port in service["spec"].get("ports", []):
            for workload, template in targets:
                if port_number(template, port.get("targetPort", port["port"])) is None:
                    error(service, f"targetPort {port.get('targetPort')} is no port of {name_of(workload)}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selected(pdb["spec"]["selector"]):
            error(pdb, "selects no pod")
    covered: set[str] = set()
    for netpol in by_kind.get("NetworkPolicy", []):
        targets = selected(netpol["spec"]["podSelector"])
        if not targets:
            error(netpol, "selects no pod")
        covered |= {name_of(w) for w, _ in targets}
        for rule in netpol["spec"].get("ingress") or []:
            sources = rule.get("from") or []
            from_monitoring = sources and all(
                (s.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == MONITORING_NAMESPACE
                and "ipBlock" not in s
                for s in sources
            )
            if not rule.get("ports"):
                error(netpol, "an ingress rule without ports opens every port")
                continue
            for port in rule["ports"]:
                for workload, template in targets:
                    number = port_number(template, port["port"])
                    component = template["metadata"]["labels"].get("app.kubernetes.io/component", "")
                    if number is None:
                        error(netpol, f"port {port['port']} is no port of {name_of(workload)}")
                    elif not sources and number != WEBHOOK_PORT:
                        error(netpol, f"opens port {number} of {name_of(workload)} to everyone; only {WEBHOOK_PORT} may be")
                    elif sources and number == ADMIN_PORTS.get(component) and not from_monitoring:
                        error(netpol, f"opens admin port {number} of {name_of(workload)} beyond the {MONITORING_NAMESPACE} namespace")
    for workload, _ in pods:
        if name_of(workload) not in covered:
            error(workload, "no NetworkPolicy selects its pods (every port open)")

    for cluster in by_kind.get("RabbitmqCluster", []):
        replicas = cluster["spec"].get("replicas", 1)
        if replicas % 2 == 0 or (overlay == "production" and replicas < 3):
            error(cluster, f"{replicas} nodes: a quorum queue needs a majority, so an odd number, 3 or more in production")



def main(argv: list[str]) -> int:
    rendered, overlay, out = Path(argv[1]), argv[2], Path(argv[3])
    docs = [d for d in yaml.safe_load_all(rendered.read_text(encoding="utf-8")) if d]
    errors: list[str] = []

    def error(doc: dict | None, message: str) -> None:
        errors.append(f"{overlay}: {name_of(doc) + ': ' if doc else ''}{message}")

    # Split for the validators.
    (out / "crd").mkdir(parents=True, exist_ok=True)
    builtin = []
    counts: dict[str, int] = {}
    for doc in docs:
        schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if schema is not None:
            counts[schema] = counts.get(schema, 0) + 1
            (out / "crd" / schema).mkdir(exist_ok=True)
            (out / "crd" / schema / f"{counts[schema]}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        elif "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].split("/")[0].endswith(".k8s.io"):
            error(doc, f"custom resource {doc['apiVersion']} with no schema in deploy/k8s/crd-schemas")
        else:
            builtin.append(doc)
    (out / "builtin.yaml").write_text(yaml.safe_dump_all(builtin), encoding="utf-8")

    try:
        policy(docs, overlay, error)
    except (KeyError, TypeError, AttributeError, IndexError) as failure:
        error(None, f"a manifest lacks what the policy checks read ({type(failure).__name__}: {failure}); "
                    "the schema validators below say which")

    for message in errors:
        print(f"error: {message}")
    if errors:
        return 1
    counted: dict[str, int] = {}
    for doc in docs:
        counted[doc["kind"]] = counted.get(doc["kind"], 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counted.items()))
    print(f"ok: {overlay}: policy and references hold for {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
