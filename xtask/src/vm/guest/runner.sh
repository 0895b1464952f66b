#!/bin/sh
# Runs a plan's steps in a guest (either kind), written to the run's results
# directory by `cargo xtask vm` with env.sh and plan.sh beside it.
#
# The host follows the serial console: every line this script writes that
# starts with "@@lucid-vm@@" is a marker (booted, ready, step-start,
# step-end, reboot, done). Each step's exit status and duration go to steps/N.rc, its
# output to steps/N.log; a step whose N.rc exists already ran in an earlier
# boot of this run and is skipped, which is how a plan continues after a
# reboot. Each step runs in a session of its own, killed whole when its
# time is up.
set -u
R=/lucid-vm/results

mark() {
    echo "@@lucid-vm@@ $*"
}
mark booted "$(uname -r)"
. "$R/env.sh"

uptime_s() {
    cut -d' ' -f1 /proc/uptime
}

# The binaries come from the workspace share, but lucid re-execs itself from
# an overlay of its own directory, which 9p may refuse: they run from a
# guest-local tmpfs, in the target/<profile>/{lucid,deps/TEST} layout the
# tests expect.
export LUCID_VM_TARGET=/run/lucid-vm/target/$LUCID_VM_PROFILE
mkdir -p /run/lucid-vm
busybox mountpoint -q /run/lucid-vm || mount -t tmpfs -o mode=0755 lucid-vm /run/lucid-vm
mkdir -p "$LUCID_VM_TARGET/deps"
# The binaries, and of the test executables only those this guest's plan runs (each crosses
# 9p, slow under emulation).
copied=yes
for f in "$LUCID_VM_STAGED"/*; do
    [ -f "$f" ] || continue
    cp -a "$f" "$LUCID_VM_TARGET/" || copied=no
done
for t in $LUCID_VM_TESTS; do
    cp -a "$LUCID_VM_STAGED/deps/$t" "$LUCID_VM_TARGET/deps/" || copied=no
done
[ "$copied" = yes ] || mark copy-failed
export PATH="$LUCID_VM_TARGET:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The scratch disk (ext4, made by the host): a directory on a real block device for the tests
# of io limits.
mkdir -p /run/lucid-vm/disk
if busybox mountpoint -q /run/lucid-vm/disk || mount -t ext4 "$LUCID_VM_BLOCK_DEVICE" /run/lucid-vm/disk; then
    export LUCID_TEST_BLOCK_DIR=/run/lucid-vm/disk
else
    echo "lucid-vm: mounting the scratch disk $LUCID_VM_BLOCK_DEVICE failed"
fi
export HOME=/root
export RUST_BACKTRACE=1
mkdir -p "$R/steps"
mark ready

# step INDEX NAME TIMEOUT_SECONDS COMMAND
step() {
    i=$1 name=$2 limit=$3 command=$4
    [ -e "$R/steps/$i.rc" ] && return 0
    mark step-start "$i" "$name"
    start=$(uptime_s)
    rm -f "$R/steps/$i.exit" "$R/steps/$i.timeout"
    cd /tmp || true
    busybox setsid sh -c '{ sh -c "$1" </dev/null; echo $? >"$2"; } 2>&1 | tee "$3"' \
        step "$command" "$R/steps/$i.exit" "$R/steps/$i.log" &
    session=$!
    (
        sleep "$limit"
        echo "timed out after $limit s" >"$R/steps/$i.timeout"
        # busybox's kill: dash's builtin takes no process group.
        busybox kill -s KILL "-$session" 2>/dev/null
    ) &
    watchdog=$!
    wait "$session"
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    if [ -e "$R/steps/$i.timeout" ]; then
        rc=timeout
    elif [ -s "$R/steps/$i.exit" ]; then
        rc=$(cat "$R/steps/$i.exit")
    else
        rc=killed
    fi
    seconds=$(awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }')
    echo "$rc $seconds" >"$R/steps/$i.rc"
    sync
    mark step-end "$i" "$name" "$rc" "$seconds"
}

# reboot_here INDEX: reboots once; the next boot goes on after it.
reboot_here() {
    i=$1
    [ -e "$R/steps/$i.rc" ] && return 0
    echo "0 0" >"$R/steps/$i.rc"
    touch /run/lucid-vm-rebooting
    sync
    mark reboot "$i"
    if [ "$LUCID_VM_GUEST" = systemd ]; then
        systemctl --no-block reboot
    fi
    exit 0
}

. "$R/plan.sh"
sync
mark done
