#!/usr/bin/env bash
# The newcomer's path on a fresh Debian/Ubuntu machine: install what is missing, build
# banger, set up the host (bridge, NAT, TAPs), build the default image (which brings Debian's
# kernel with it: nothing is compiled), then `banger vm run` in this repo and leave you at a
# shell in the VM (or run a given command).
#
#   ./scripts/quickstart.sh                          # the image's own kernel
#   ./scripts/quickstart.sh --kernel vmlinux.zst     # or boot a kernel file you have (plain or .zst ELF vmlinux)
#   ./scripts/quickstart.sh -- uname -a              # run a command instead of a shell
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=""
name="quickstart"
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--kernel FILE] [--name VM] [-- command...]" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

echo "==> installing what is missing"
bash scripts/install-deps.sh
echo "==> building banger"
bun run build
banger="$PWD/dist/banger"

echo "==> host setup (bridge, NAT rules, TAP pool)"
$SUDO "$banger" host setup

kernel_args=()
if [ -n "$kernel" ]; then
  "$banger" kernel show quickstart-kernel >/dev/null 2>&1 || { echo "==> importing kernel $kernel"; "$banger" kernel import "$kernel" --name quickstart-kernel; }
  kernel_args=(--kernel quickstart-kernel)
fi

if ! "$banger" image show bookworm >/dev/null 2>&1; then
  echo "==> building the default Debian image with its own kernel (a minute or two)"
  "$banger" image build
fi

echo "==> banger vm run"
if [ $# -gt 0 ]; then
  exec "$banger" vm run --name "$name" "${kernel_args[@]}" -- "$@"
fi
"$banger" vm run --name "$name" "${kernel_args[@]}"
exec "$banger" vm ssh "$name"
