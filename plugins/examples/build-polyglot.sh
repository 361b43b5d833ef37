#!/usr/bin/env bash
# Builds the JavaScript and Python example plugins (and the hostile JS/Python fixtures) into
# components. The tools are installed,
# pinned, from npm and PyPI into a cache folder (reused while the pins are unchanged).
# Usage: build-polyglot.sh <cache dir> <output dir>; needs node/npm and python3.
set -euo pipefail
COMPONENTIZE_JS=0.23.0
COMPONENTIZE_PY=0.25.1
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../wit"
cache="${1:?usage: build-polyglot.sh <cache dir> <output dir>}"
out="${2:?usage: build-polyglot.sh <cache dir> <output dir>}"
mkdir -p "$cache" "$out"
cache="$(cd "$cache" && pwd)"

stamp="$cache/node/.componentize-js-$COMPONENTIZE_JS"
if [ ! -f "$stamp" ]; then
  npm install --no-audit --no-fund --prefix "$cache/node" "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >&2
  touch "$stamp"
fi
stamp="$cache/py/.componentize-py-$COMPONENTIZE_PY"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$cache/py"
  "$cache/py/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY" >&2
  touch "$stamp"
fi

node "$here/contact-mapper-js/build.mjs" "$cache/node/node_modules" "$wit" "$out/contact_mapper_js.wasm"
"$cache/py/bin/componentize-py" -d "$wit" -w record-mapper componentize \
  -p "$here/contact-mapper-py" app -o "$out/contact_mapper_py.wasm" >&2

# The hostile JavaScript and Python fixtures: a thrown Error and a raised exception.
fixtures="$here/../fixtures"
node "$fixtures/hostile-js/build.mjs" "$cache/node/node_modules" "$wit" "$out/hostile_js.wasm"
"$cache/py/bin/componentize-py" -d "$wit" -w record-mapper componentize \
  -p "$fixtures/hostile-py" app -o "$out/hostile_py.wasm" >&2
