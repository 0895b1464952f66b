#!/bin/busybox sh
# /init of the systemd guest's initramfs: loads the disk, ext4 and 9p
# modules, mounts the root (/dev/vda), the kernel's modules (so udev and
# systemd can modprobe), the workspace at its host path and the run's
# results directory, then hands over to systemd.
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /newroot
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev

fail() {
    echo "lucid-vm: $*"
    $bb poweroff -f
}

for module in /lib/modules/lucid-vm/*.ko; do
    [ -e "$module" ] || continue
    $bb insmod "$module" || echo "lucid-vm: insmod $module failed"
done

workspace=
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
    lucid_vm.workspace=*) workspace="${arg#lucid_vm.workspace=}" ;;
    esac
done

tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && fail "no /dev/vda after 10 s"
    $bb sleep 0.1
done
$bb mount -t ext4 -o rw /dev/vda /newroot || fail "mounting the root /dev/vda failed"

release=$($bb uname -r)
options=trans=virtio,version=9p2000.L,msize=262144
$bb mkdir -p /newroot/lucid-vm/results "/newroot$workspace" "/newroot/usr/lib/modules/$release"
$bb mount -t 9p -o "$options" lucid-results /newroot/lucid-vm/results || fail "mounting the results share failed"
$bb mount -t 9p -o "$options,ro" lucid-ws "/newroot$workspace" || fail "mounting the workspace share failed"
$bb mount -t 9p -o "$options,ro" lucid-modules "/newroot/usr/lib/modules/$release" || fail "mounting the modules share failed"

$bb umount /proc /sys
$bb mount --move /dev /newroot/dev
exec $bb switch_root /newroot /sbin/init
