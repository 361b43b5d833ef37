#!/usr/bin/env bash
# Builds the JavaScript and Python example plugins (and the hostile JS/Python fixtures) into
# components. The tools are installed, pinned, from npm and PyPI into a cache folder laid out as
# `conduit plugin build`'s (<cache>/componentize-js-<v>, <cache>/componentize-py-<v>, each with
# an `.installed` stamp, under <cache>/.lock), so the two share one install.
# Usage: build-polyglot.sh <cache dir> <output dir>; needs node/npm and python3.
set -euo pipefail
# The pins: keep equal to host/src/cli/plugin_kit/tools.rs (a test checks).
COMPONENTIZE_JS=0.23.0
COMPONENTIZE_PY=0.25.1
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../wit"
sdk_py="$here/../sdk-py"
cache="${1:?usage: build-polyglot.sh <cache dir> <output dir>}"
out="${2:?usage: build-polyglot.sh <cache dir> <output dir>}"
mkdir -p "$cache" "$out"
cache="$(cd "$cache" && pwd)"
js="$cache/componentize-js-$COMPONENTIZE_JS"
py="$cache/componentize-py-$COMPONENTIZE_PY"

(
  flock 9
  if [ ! -f "$js/.installed" ]; then
    rm -rf "$js" && mkdir -p "$js"
    npm install --no-audit --no-fund --prefix "$js" "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >&2
    touch "$js/.installed"
  fi
  if [ ! -f "$py/.installed" ]; then
    rm -rf "$py"
    python3 -m venv "$py"
    "$py/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY" >&2
    touch "$py/.installed"
  fi
) 9>"$cache/.lock"

node "$here/contact-mapper-js/build.mjs" "$js/node_modules" "$wit" "$out/contact_mapper_js.wasm"
"$py/bin/componentize-py" -d "$wit" -w record-mapper componentize \
  -p "$here/contact-mapper-py" -p "$sdk_py" app -o "$out/contact_mapper_py.wasm" >&2

# The hostile JavaScript and Python fixtures: a thrown Error and a raised exception.
fixtures="$here/../fixtures"
node "$fixtures/hostile-js/build.mjs" "$js/node_modules" "$wit" "$out/hostile_js.wasm"
"$py/bin/componentize-py" -d "$wit" -w record-mapper componentize \
  -p "$fixtures/hostile-py" app -o "$out/hostile_py.wasm" >&2
