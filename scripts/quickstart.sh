#!/usr/bin/env bash
# The newcomer's path on a fresh Debian/Ubuntu machine: install what is missing, build
# banger, set up the host (bridge, NAT, TAPs), get a kernel and the default image, then
# `banger vm run` in this repo and leave you at a shell in the VM (or run a given command).
#
#   ./scripts/quickstart.sh                          # builds a kernel from linux-source (~10 min on 2 cores)
#   ./scripts/quickstart.sh --kernel vmlinux.zst     # or use a kernel file you have (plain or .zst ELF vmlinux)
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

if ! "$banger" kernel show default >/dev/null 2>&1; then
  if [ -n "$kernel" ]; then
    echo "==> importing kernel $kernel"
    "$banger" kernel import "$kernel" --name default
  elif "$banger" config show | grep -q "^kernel_catalog = \".\+\""; then
    echo "==> pulling the default kernel from the catalog"
    "$banger" kernel pull default
  else
    echo "==> building a kernel from Debian's linux-source (about 10 minutes on 2 cores)"
    ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || { $SUDO apt-get install -y -qq linux-source-6.1 bc bison flex libelf-dev libssl-dev build-essential >/dev/null; }
    "$banger" kernel build --name default
  fi
fi

if ! "$banger" image show bookworm >/dev/null 2>&1; then
  echo "==> building the default Debian image (about a minute)"
  "$banger" image build
fi

echo "==> banger vm run"
if [ $# -gt 0 ]; then
  exec "$banger" vm run --name "$name" -- "$@"
fi
"$banger" vm run --name "$name"
exec "$banger" vm ssh "$name"
