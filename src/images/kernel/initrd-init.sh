#!/bin/sh
# banger's initrd: loads the modules a distribution kernel keeps out of its image (virtio
# transport and disks, the agent's channel, overlayfs), mounts the root read-only and hands
# over to the image's init (banger's boot glue). busybox is its only program.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" 2>/dev/null || echo "banger-initrd: insmod $m failed"; done </modules/order

root=/dev/vda; mode=ro; init=/sbin/init
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	rw) mode=rw ;;
	init=*) init=${arg#init=} ;;
	esac
done
# devices found through ACPI appear as their drivers bind; give them up to 10 s
n=0
while [ ! -b "$root" ] && [ $n -lt 1000 ]; do usleep 10000; n=$((n + 1)); done
if ! mount -t ext4 -o "$mode" "$root" /newroot; then
	echo "banger-initrd: cannot mount the root $root; modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
	exit 1
fi
# the image's init finds /dev, /proc and /sys mounted, as after initramfs-tools
for m in dev proc sys; do mount --move "/$m" "/newroot/$m" 2>/dev/null || umount "/$m"; done
exec switch_root /newroot "$init" "$@"
