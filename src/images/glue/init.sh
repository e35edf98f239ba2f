#!/bin/sh
# banger-init: runs as PID 1 from the image's read-only base rootfs (/dev/vda) and hands
# over to systemd. It joins the base with the per-VM overlay disk (/dev/vdb) through
# overlayfs, mounts the per-VM work disk (/dev/vdc) at /root and applies the per-VM config
# drive (/dev/vdd, layout documented in src/images/config-drive.ts). Only dash, mount,
# util-linux, coreutils and grep are used, so any Debian minbase image can carry it;
# iproute2 and kmod only where the kernel leaves networking and modules to it.
# Every failure is logged with a "banger-init:" prefix and boot goes on as far as it can:
# without the overlay it boots the base read-only rather than not at all.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

OVERLAY_DEV=/dev/vdb
WORK_DEV=/dev/vdc
CONFIG_DEV=/dev/vdd
# /run is a tmpfs that switch_root moves into the new root, so these mounts stay visible.
STATE=/run/banger
CFG=$STATE/config
# An empty directory baked into the image: the base is read-only, nothing can be created.
NEWROOT=/usr/lib/banger/root
R=$NEWROOT

log() { echo "banger-init: $*"; }

# run CMD...: runs a step, logs it when it fails, returns its status.
run() {
	"$@" && return 0
	rc=$?
	log "failed (exit $rc): $*"
	return $rc
}

is_mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }

mount_basics() {
	is_mounted /proc || run mount -t proc -o nosuid,nodev,noexec proc /proc
	is_mounted /sys || run mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
	is_mounted /dev || run mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
	is_mounted /run || run mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
	mkdir -p "$STATE/overlay" "$CFG"
}

mount_root() {
	run mount -t ext4 -o rw,noatime "$OVERLAY_DEV" "$STATE/overlay" || return 1
	mkdir -p "$STATE/overlay/upper" "$STATE/overlay/work" || return 1
	run mount -t overlay overlay \
		-o "lowerdir=/,upperdir=$STATE/overlay/upper,workdir=$STATE/overlay/work" "$NEWROOT"
}

# The kernel sets eth0 up from ip= when it has IP autoconfiguration; a distribution kernel
# (virtio_net a module, no IP_PNP) leaves it to us: same ip= fields, set with iproute2.
# Every program run costs under emulation (TCG): the common paths run none.
configure_network() {
	# the kernel did it: ipconfig leaves /proc/net/pnp behind
	[ -e /proc/net/pnp ] && return 0
	spec=
	read -r cmdline </proc/cmdline
	for arg in $cmdline; do
		case "$arg" in ip=*) spec=${arg#ip=} ;; esac
	done
	[ -n "$spec" ] || return 0
	# ip=<addr>::<gateway>:<netmask>:<hostname>:<device>:off; set -- only touches this function's arguments
	old_ifs=$IFS
	IFS=:
	set -- $spec
	IFS=$old_ifs
	addr=$1 gw=$3 mask=$4 dev=${6:-eth0}
	[ -e "/sys/class/net/$dev" ] || modprobe -q virtio_net 2>/dev/null
	n=0
	while [ ! -e "/sys/class/net/$dev" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
	command -v ip >/dev/null || { log "no ip command to configure $dev"; return 1; }
	run ip link set "$dev" up && run ip addr add "$addr/$mask" dev "$dev" &&
		{ [ -z "$gw" ] || run ip route add default via "$gw" dev "$dev"; }
}

# install_file SRC DEST MODE: replaces DEST atomically, owned by root.
install_file() {
	mkdir -p "$(dirname "$2")" &&
		cp "$1" "$2.banger-new" && chown 0:0 "$2.banger-new" && chmod "$3" "$2.banger-new" &&
		mv -f "$2.banger-new" "$2"
}

apply_identity() {
	h=$(cat "$CFG/hostname") || return 1
	echo "$h" >"$R/etc/hostname"
	echo "$h" >/proc/sys/kernel/hostname
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$h" >"$R/etc/hosts"
	rm -f "$R/etc/resolv.conf"
	install_file "$CFG/resolv.conf" "$R/etc/resolv.conf" 0644
}

apply_ssh() {
	# sshd's StrictModes checks these: /root 0755 and .ssh 0700, all root-owned.
	chown 0:0 "$R/root" && chmod 0755 "$R/root" || return 1
	mkdir -p "$R/root/.ssh" && chown 0:0 "$R/root/.ssh" && chmod 0700 "$R/root/.ssh" || return 1
	ak="$R/root/.ssh/authorized_keys"
	[ -f "$ak" ] || : >"$ak"
	# banger's keys are added; keys the user added inside the guest stay.
	while IFS= read -r line; do
		[ -n "$line" ] && ! grep -qxF -- "$line" "$ak" && echo "$line" >>"$ak"
	done <"$CFG/authorized_keys"
	chown 0:0 "$ak" && chmod 0600 "$ak" || return 1
	install_file "$CFG/ssh_host_ed25519_key" "$R/etc/ssh/ssh_host_ed25519_key" 0600 &&
		install_file "$CFG/ssh_host_ed25519_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub" 0644
}

apply_extras() {
	[ -f "$CFG/gitconfig" ] && { run install_file "$CFG/gitconfig" "$R/root/.gitconfig" 0644 || :; }
	if [ -f "$CFG/env" ]; then
		run install_file "$CFG/env" "$R/etc/banger/env" 0644
		printf 'set -a\n. /etc/banger/env\nset +a\n' >"$R/etc/profile.d/banger-env.sh"
	fi
	if [ -f "$CFG/agent/version" ]; then
		new=$(cat "$CFG/agent/version")
		cur=$(cat "$R/etc/banger/agent-version" 2>/dev/null)
		if [ "$new" != "$cur" ]; then
			run install_file "$CFG/agent/banger-agent" "$R/usr/local/bin/banger-agent" 0755 &&
				echo "$new" >"$R/etc/banger/agent-version" && log "guest agent updated to $new"
		fi
	fi
}

# file_sync: manifest lines are "<idx> <f|d> <mode> <guest path>"; paths may hold spaces.
apply_files() {
	[ -f "$CFG/files/manifest" ] || return 0
	while read -r idx kind mode path; do
		case "$path" in /root/*) ;; *) log "file_sync: refusing $path"; continue ;; esac
		if [ "$kind" = d ]; then
			run mkdir -p "$R$path" &&
				run cp -R --preserve=mode "$CFG/files/$idx/." "$R$path/" &&
				run chown -R 0:0 "$R$path"
		else
			run install_file "$CFG/files/$idx" "$R$path" "$mode"
		fi
	done <"$CFG/files/manifest"
}

provision() {
	run mount -t ext4 -o ro "$CONFIG_DEV" "$CFG" || return 1
	if [ "$(cat "$CFG/format" 2>/dev/null)" != 1 ]; then
		log "config drive format not understood; skipping provisioning"
	else
		mkdir -p "$R/etc/banger"
		run apply_identity
		run apply_files
		run apply_ssh
		run apply_extras
	fi
	run umount "$CFG"
}

mount_basics
configure_network || log "continuing without network configuration"
# overlayfs may be a module (distribution kernels): banger's initrd loads it, mount would too
if ! mount_root; then
	log "no overlay root; booting the base image read-only"
	exec /sbin/init "$@"
fi
run mount -t ext4 -o rw,noatime "$WORK_DEV" "$R/root" || log "continuing without the work disk at /root"
provision || log "continuing without provisioning"
log "switching to systemd"
exec switch_root "$NEWROOT" /sbin/init "$@"
