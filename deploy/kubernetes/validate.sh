#!/usr/bin/env bash
# Renders every tenant overlay with `kubectl kustomize` and validates the result offline
# against the Kubernetes JSON schemas (strict: unknown fields fail) with the PyPI package
# kubernetes-validate, installed pinned into a cache folder on first use. Writes each
# rendering as <out>/<overlay>.yaml and, for tests to inspect, <out>/<overlay>.json (a list
# of the resources).
#
#   deploy/kubernetes/validate.sh <tool-cache> <out>
#
# The overlays are rendered from a copy whose secrets.env files are their committed
# examples, so real secrets are never needed (nor read) here.
set -euo pipefail
KUBERNETES_VALIDATE=1.37.0
# The oldest Kubernetes the manifests must work on.
KUBERNETES_VERSION=1.30.0

here="$(cd "$(dirname "$0")" && pwd)"
cache="$1"
out="$2"
mkdir -p "$cache" "$out"

command -v kubectl >/dev/null || { echo "kubectl (with its built-in kustomize) is needed to render the overlays" >&2; exit 1; }

venv="$cache/kubernetes-validate-$KUBERNETES_VALIDATE"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE" >&2
fi

copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
cp -r "$here/." "$copy/"
for overlay in "$copy"/overlays/*/; do
    name="$(basename "$overlay")"
    cp "$overlay/secrets.env.example" "$overlay/secrets.env"
    kubectl kustomize "$overlay" > "$out/$name.yaml"
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out/$name.yaml"
    "$venv/bin/python" -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)' \
        < "$out/$name.yaml" > "$out/$name.json"
    echo "$name: rendered and valid against Kubernetes $KUBERNETES_VERSION"
done
