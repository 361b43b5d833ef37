#!/usr/bin/env bash
# Measures the plugin kit per language with the given conduit binary: from nothing to a
# passing plugin test, component size, first-load compile, rows/s through the host.
# Usage: measure-kit.sh <conduit binary> <empty work folder>; needs cargo with wasm32-wasip2,
# node/npm and python3. Prints one line per step; BENCHMARKS.md, "Plugin kit", records a run.
set -uo pipefail
C="$1"; W="$2"; mkdir -p "$W"; cd "$W"
now() { date +%s.%N; }
el() { python3 -c "print(f'{$2-$1:.1f}')"; }
unset CARGO_TARGET_DIR
python3 - <<'PY'
import json
rows=[]
for i in range(5000):
    rows.append({"key": f"c-{i}", "op": "upsert", "values": [{"type":"guid","value":f"c-{i}"},{"type":"text","value":"Ada"},{"type":"text","value":"Lovelace"},{"type":"text","value":f"ada{i}@example.com"},{"type":"datetime","value":"2026-11-29T05:00:00Z"}], "modified_at": "2026-11-29T05:00:00Z"})
base={"phase":"initial","table":"contact","columns":["contactid","firstname","lastname","emailaddress1","modifiedon"]}
json.dump(dict(base, rows=rows), open("rows5000.json","w"))
json.dump(dict(base, rows=rows[:1]), open("rows1.json","w"))
PY
for lang in rust js python; do
  export CONDUIT_TOOLS_DIR="$W/tools-$lang"
  p="m-$lang"
  t0=$(now); "$C" plugin new "$p" --lang "$lang" > /dev/null; t1=$(now)
  "$C" plugin build "$p" > build-$lang.log 2>&1; t2=$(now)
  "$C" plugin test "$p/$p.wasm" --settings "$p/sample/settings.toml" --input "$p/sample/input.json" --cache-dir "cache-$lang" --json > out-$lang.json 2> test-$lang.log; t3=$(now)
  same=$(python3 -c "import json;print(json.load(open('out-$lang.json'))==json.load(open('$p/sample/expected.json')))")
  echo "$lang: new $(el $t0 $t1) s, build $(el $t1 $t2) s, test $(el $t2 $t3) s, total $(el $t0 $t3) s, expected=$same, size $(stat -c %s $p/$p.wasm)"
  # First load (compile) vs warm cache, on the one-row input.
  rm -rf "fresh-$lang"; t0=$(now); "$C" plugin test "$p/$p.wasm" --settings "$p/sample/settings.toml" --input rows1.json --cache-dir "fresh-$lang" -q --deadline-ms 60000 --memory-mb 512 > /dev/null; t1=$(now)
  echo "$lang: first load (compile + 1 row) $(el $t0 $t1) s"
  for n in 1 5000 1 5000 1 5000; do
    t0=$(now); "$C" plugin test "$p/$p.wasm" --settings "$p/sample/settings.toml" --input rows$n.json --cache-dir "fresh-$lang" -q --deadline-ms 60000 --memory-mb 512 > /dev/null; t1=$(now)
    echo "$lang: warm $n rows $(el $t0 $t1) s"
  done
done
