#!/bin/sh
# A busybox container through `lucid run` with memory, pids and cpu limits:
# the bundle is made here (`lucid spec`, a busybox rootfs), the container
# prints its own cgroup's limits, and they must be the ones asked for.
set -eu
bundle=$(mktemp -d /tmp/lucid-vm-bundle.XXXXXX)
root=$(mktemp -d /tmp/lucid-vm-root.XXXXXX)
id=vm-busybox-$$
cleanup() {
    lucid --root "$root" delete --force "$id" 2>/dev/null || true
    rm -rf "$bundle" "$root"
}
trap cleanup EXIT

mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev" "$bundle/rootfs/tmp" "$bundle/rootfs/etc"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(busybox --list); do
    # The list names busybox itself.
    [ -e "$bundle/rootfs/bin/$applet" ] || ln -s busybox "$bundle/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$bundle/rootfs/etc/passwd"
chmod 755 "$bundle"

cd "$bundle"
lucid spec
# runc's template: a terminal, `sh` as the process, resources with the
# device rules only. No jq in the guests: sed on the template's own lines.
sed -i \
    -e 's/"terminal": true/"terminal": false/' \
    -e 's|^\([[:space:]]*\)"sh"$|\1"sh", "-c", "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max; echo hello from $(hostname)"|' \
    -e 's/"resources": {/"resources": { "memory": { "limit": 67108864 }, "pids": { "limit": 64 }, "cpu": { "quota": 50000, "period": 100000 },/' \
    config.json
grep -q '"limit": 67108864' config.json || {
    echo "lucid spec's template changed: the limits were not added"
    exit 1
}

out=$(lucid --root "$root" run --bundle "$bundle" "$id")
echo "$out"
expected="67108864
64
50000 100000
hello from lucid"
if [ "$out" != "$expected" ]; then
    echo "the container saw other limits than it was given; expected:"
    echo "$expected"
    exit 1
fi
echo "limits in place: memory.max 64 MiB, pids.max 64, cpu.max 50000/100000"
