#!/usr/bin/env bash
# Installs what banger and its tests need on Debian/Ubuntu: host tools, Bun, npm deps.
# Idempotent: installs only what is missing. Needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
want qemu-system-x86_64 qemu-system-x86
want mkfs.ext4 e2fsprogs
want mmdebstrap mmdebstrap
want zstd zstd
want ssh openssh-client
want ssh-keygen openssh-client
want sshd openssh-server
want ip iproute2
want nft nftables
want sudo sudo
want dig dnsutils
want git git
want npm npm
want newuidmap uidmap
want curl curl
want python3 python3
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
if ! command -v bun >/dev/null 2>&1; then
  echo "installing bun (npm i -g bun)"
  $SUDO npm i -g bun >/dev/null 2>&1
fi
bun install --frozen-lockfile >/dev/null 2>&1 || bun install
