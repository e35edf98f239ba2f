#!/usr/bin/env bash
# Installs what the tests need, builds banger, and runs every test (unit, integration,
# and end-to-end tests that boot real guests under QEMU). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bun run build || { echo "0 passed, 1 failed"; exit 1; }
# The type check, the import check (scripts/check-imports.ts), the format check and the lint
# (Biome: functions of at most 50 lines outside tests) count as four more tests: any failing
# fails the run, but every test still runs.
typefail=0
bun run typecheck || { echo "type check failed"; typefail=$((typefail + 1)); }
bun scripts/check-imports.ts || { echo "import check failed"; typefail=$((typefail + 1)); }
if ! fmt=$(bun run format:check 2>&1); then echo "$fmt" | grep -E "^\S+\.ts " | head -20; echo "format check failed: run \`bun run format\`"; typefail=$((typefail + 1)); fi
if ! lint=$(bun run lint 2>&1); then echo "$lint" | grep -E "^\S+\.ts:[0-9]+|×" | head -40; echo "lint failed: split the functions named above into smaller ones (\`bun run lint\` lists them)"; typefail=$((typefail + 1)); fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bun test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -1 | grep -oE '[0-9]+')
fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -1 | grep -oE '[0-9]+')
echo "$(( ${pass:-0} + 4 - typefail )) passed, $(( ${fail:-0} + typefail )) failed"
[ "$typefail" -eq 0 ] || exit 1
exit "$rc"
