#!/bin/busybox sh
# /init of the initramfs guest: a pure cgroup v2 host without systemd.
#
# Stage 1 runs in the initramfs, which pivot_root cannot leave (lucid's
# containers pivot): it copies itself into a tmpfs and switch_roots there.
# Stage 2 mounts what a host has, enables every cgroup controller in the
# root as systemd would, mounts the shares and runs the plan
# (/lucid-vm/results/runner.sh), then powers off or reboots as it asks.
bb=/bin/busybox

if [ ! -e /.lucid-vm-stage2 ]; then
    $bb mount -t proc proc /proc
    $bb mkdir -p /newroot
    $bb mount -t tmpfs -o mode=0755 root /newroot
    for entry in /*; do
        case "$entry" in
        /newroot | /proc | /sys | /dev) $bb mkdir -p "/newroot$entry" ;;
        *) $bb cp -a "$entry" /newroot/ ;;
        esac
    done
    $bb cp -a /dev/console /dev/null /newroot/dev/
    $bb touch /newroot/.lucid-vm-stage2
    $bb umount /proc
    exec $bb switch_root /newroot /init
fi

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=0755 run /run

for module in /lib/modules/lucid-vm/*.ko; do
    [ -e "$module" ] || continue
    insmod "$module" || echo "lucid-vm: insmod $module failed"
done

mount -t cgroup2 cgroup2 /sys/fs/cgroup
for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" >/sys/fs/cgroup/cgroup.subtree_control ||
        echo "lucid-vm: enabling the $controller controller failed"
done
mount -t bpf bpf /sys/fs/bpf
[ -d /sys/kernel/tracing ] && mount -t tracefs tracefs /sys/kernel/tracing
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug
hostname lucid-vm
ip link set lo up

workspace=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    lucid_vm.workspace=*) workspace="${arg#lucid_vm.workspace=}" ;;
    esac
done
options=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /lucid-vm/results "$workspace"
if ! mount -t 9p -o "$options" lucid-results /lucid-vm/results ||
    ! mount -t 9p -o "$options,ro" lucid-ws "$workspace"; then
    echo "lucid-vm: mounting the shares failed"
    poweroff -f
fi

cd /
sh /lucid-vm/results/runner.sh
sync
if [ -e /run/lucid-vm-rebooting ]; then
    reboot -f
fi
poweroff -f
