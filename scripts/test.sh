#!/usr/bin/env bash
# Installs what the tests need, builds banger, and runs every test (unit, integration,
# and end-to-end tests that boot real guests under QEMU). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bun run build || { echo "0 passed, 1 failed"; exit 1; }
# The type check and the import check (scripts/check-imports.ts) count as two more tests: either
# failing fails the run, but every test still runs.
typefail=0
bun run typecheck || { echo "type check failed"; typefail=$((typefail + 1)); }
bun scripts/check-imports.ts || { echo "import check failed"; typefail=$((typefail + 1)); }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bun test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -1 | grep -oE '[0-9]+')
fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -1 | grep -oE '[0-9]+')
echo "$(( ${pass:-0} + 2 - typefail )) passed, $(( ${fail:-0} + typefail )) failed"
[ "$typefail" -eq 0 ] || exit 1
exit "$rc"
