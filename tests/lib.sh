# tests/lib.sh - helpers shared by the ckptfs mount tests.  Source it from
# bash after `set -eu`.
#
# Environment (set by `make check`, defaults for running by hand):
#   CKPTFS   absolute path of the built daemon (required)
#   PYTHON   a python3 with numpy (default /usr/bin/python3)
#   srcdir   top source directory (default: the parent of this file's dir)
#   CKPTFS_MOUNT_TIMEOUT  seconds to wait for a mount (default 20)
#   CKPTFS_KEEP=1         keep the temporary directory after the test
#
# Conventions, the same in every test: a mktemp dir holds everything the
# test writes; an EXIT trap unmounts whatever is still mounted below it
# (lazily if need be), kills daemons that are left and removes the dir;
# readiness is polled against /proc/self/mounts with a deadline while the
# daemon is checked to be alive; after unmounting, the daemon must exit 0
# and its log must hold no sanitizer or valgrind report.  Exit status:
# 0 pass, 77 skip, 99 broken test setup, anything else fail.

PYTHON=${PYTHON:-/usr/bin/python3}
if [ -z "${srcdir:-}" ]; then
    srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fi
TEST_NAME=$(basename "$0" .sh)
TESTDIR=
CKPTFS_PID=
CKPTFS_MNT=
CKPTFS_LOG=
CKPTFS_PIDS=
_ckptfs_nmount=0

note() {
    printf '%s: %s\n' "$TEST_NAME" "$*"
}

fail() {
    printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
    # Any daemon that wrote something (a sanitizer report, an abort) says why.
    local log
    for log in "${TESTDIR:-/nonexistent}"/ckptfs.*.log; do
        [ -s "$log" ] || continue
        printf '%s: --- %s ---\n' "$TEST_NAME" "$log" >&2
        tail -n 40 "$log" >&2
    done
    exit 1
}

skip() {
    printf '%s: SKIP: %s\n' "$TEST_NAME" "$*" >&2
    exit 77
}

hard_error() {
    printf '%s: ERROR: %s\n' "$TEST_NAME" "$*" >&2
    exit 99
}

# Skip (77) unless FUSE mounts can work here.
need_fuse() {
    [ -c /dev/fuse ] || skip "/dev/fuse is missing"
    command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 is not installed"
    ( exec 3<>/dev/fuse ) 2>/dev/null || skip "/dev/fuse cannot be opened"
}

need_ckptfs() {
    [ -n "${CKPTFS:-}" ] || hard_error "CKPTFS is not set (path of the built ckptfs)"
    [ -x "$CKPTFS" ] || hard_error "CKPTFS=$CKPTFS is not an executable"
}

need_python() {
    "$PYTHON" -c 'import numpy' 2>/dev/null ||
        skip "$PYTHON cannot import numpy (set PYTHON)"
}

# What every mount test needs first: FUSE (else skip), numpy, the built
# ckptfs, and its $TESTDIR.
mount_test_init() {
    need_fuse
    need_python
    need_ckptfs
    make_testdir
}

# Make $TESTDIR and install the traps that clean it up.
make_testdir() {
    TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-$TEST_NAME.XXXXXXXX")
    # The default disk cache ($XDG_CACHE_HOME/ckptfs) stays inside the test.
    XDG_CACHE_HOME=$TESTDIR/xdg-cache
    export XDG_CACHE_HOME
    trap _ckptfs_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    note "temporary directory $TESTDIR"
}

# expect_refused WANT CKPTFS-ARGS...: ckptfs exits 1 with exactly WANT (one
# line) on stderr.
expect_refused() {
    local want=$1 rc=0 err
    shift
    err=$("$CKPTFS" "$@" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -eq 1 ] || fail "ckptfs $*: exit $rc, expected 1 (stderr: $err)"
    [ "$err" = "$want" ] || fail "ckptfs $*: stderr
  got:  $err
  want: $want"
    note "  refused: $want"
}

# expect_mount_refused WANT SRC [OPTION...]: mounting SRC (on a scratch
# mount point) is refused so.
expect_mount_refused() {
    local want=$1 src=$2 mnt=$TESTDIR/mnt-refused
    shift 2
    mkdir -p "$mnt"
    expect_refused "$want" "$@" "$src" "$mnt"
}

# Run examples/gen-model.py: gen_model PRESET OUTDIR [--seed N]
gen_model() {
    "$PYTHON" "$srcdir/examples/gen-model.py" "$@"
}

# stat_of MNT KEY/PATH: a number of MNT's .ckptfs/stats (an object: the sum
# of its values)
stat_of() {
    "$PYTHON" -c 'import json,sys
j=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("/"):
    j=j[k]
print(int(sum(j.values())) if isinstance(j, dict) else int(j))' "$1/.ckptfs/stats" "$2"
}

# gen_llama_bf16 DIR SEED HIDDEN LAYERS HEADS KV_HEADS INTERMEDIATE VOCAB: a
# LLaMA-shaped bf16 checkpoint of those sizes (untied), made by
# examples/gen-model.py's own builders.
gen_llama_bf16() {
    "$PYTHON" - "$srcdir/examples/gen-model.py" "$@" <<'PY'
import importlib.util, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("gen_model", sys.argv[1])
gm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gm)
out, seed, hidden, layers, heads, kv, inter, vocab = sys.argv[2], *map(int, sys.argv[3:10])
os.makedirs(out)
c = gm.llama_config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                    torch_dtype="bfloat16", tie_word_embeddings=False,
                    rms_norm_eps=1e-05, max_position_embeddings=256)
gm._llama_family(out, np.random.default_rng(seed), c, "BF16", gm.BF16_SPECIALS)
PY
}

# True when PATH is a mount point in /proc/self/mounts.  Only PATH's parent
# is resolved, never PATH itself, so it cannot hang on a daemon that does
# not answer.
is_mounted() {
    local p
    p=$(cd "$(dirname "$1")" 2>/dev/null && pwd -P)/$(basename "$1") || p=$1
    awk -v p="$p" '$2 == p { found = 1 } END { exit !found }' /proc/self/mounts
}

# Mount points below $TESTDIR, deepest first.
_mounts_below() {
    [ -n "$TESTDIR" ] || return 0
    awk -v d="$TESTDIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts |
        sort -r
}

# True while PID exists and is not a zombie.
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Fail if a daemon log holds sanitizer or valgrind reports.
check_log() {
    local log=$1
    if grep -nE 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer|UndefinedBehaviorSanitizer|runtime error:|ERROR SUMMARY: [1-9]' "$log" >&2
    then
        fail "sanitizer report in $log"
    fi
}

_show_log() {
    if [ -n "$CKPTFS_LOG" ] && [ -s "$CKPTFS_LOG" ]; then
        printf '%s: --- %s ---\n' "$TEST_NAME" "$CKPTFS_LOG" >&2
        tail -n 50 "$CKPTFS_LOG" >&2
    fi
}

# mount_ckptfs SRC MNT [OPTION...]: start "$CKPTFS" -f [OPTION...] SRC MNT
# in the background (output to $CKPTFS_LOG) and wait until MNT is mounted;
# with CKPTFS_WRAP set, through that command (it must exec the daemon).
# Sets CKPTFS_PID, CKPTFS_MNT, CKPTFS_LOG.
mount_ckptfs() {
    local src=$1 mnt=$2 deadline rc
    shift 2
    _ckptfs_nmount=$((_ckptfs_nmount + 1))
    CKPTFS_LOG=$TESTDIR/ckptfs.$_ckptfs_nmount.log
    CKPTFS_MNT=$mnt
    note "mount: $CKPTFS -f $* $src $mnt"
    # CKPTFS_WRAP: a command that execs the daemon (setpriv ...), or empty
    # shellcheck disable=SC2086
    ${CKPTFS_WRAP:-} "$CKPTFS" -f "$@" "$src" "$mnt" >"$CKPTFS_LOG" 2>&1 &
    CKPTFS_PID=$!
    CKPTFS_PIDS="$CKPTFS_PIDS $CKPTFS_PID"
    deadline=$(($(date +%s) + ${CKPTFS_MOUNT_TIMEOUT:-20}))
    while ! is_mounted "$mnt"; do
        if ! alive "$CKPTFS_PID"; then
            rc=0
            wait "$CKPTFS_PID" || rc=$?
            _show_log
            fail "ckptfs exited with status $rc before $mnt was mounted"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            _show_log
            fail "$mnt not mounted after ${CKPTFS_MOUNT_TIMEOUT:-20}s"
        fi
        sleep 0.05
    done
    # the first request waits for FUSE_INIT; make sure it is answered
    stat "$mnt" >/dev/null || { _show_log; fail "stat $mnt failed"; }
    note "mounted (pid $CKPTFS_PID)"
}

# umount_ckptfs: unmount $CKPTFS_MNT, require the daemon to exit 0 within
# the deadline and its log to be free of sanitizer reports.
umount_ckptfs() {
    local mnt=$CKPTFS_MNT pid=$CKPTFS_PID deadline rc p rest
    fusermount3 -u "$mnt" || { _show_log; fail "fusermount3 -u $mnt failed"; }
    deadline=$(($(date +%s) + ${CKPTFS_MOUNT_TIMEOUT:-20}))
    while alive "$pid"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            _show_log
            fail "ckptfs (pid $pid) still running after unmount"
        fi
        sleep 0.05
    done
    rc=0
    wait "$pid" || rc=$?
    rest=
    for p in $CKPTFS_PIDS; do
        [ "$p" = "$pid" ] || rest="$rest $p"
    done
    CKPTFS_PIDS=$rest
    if [ "$rc" -ne 0 ]; then
        _show_log
        fail "ckptfs exited with status $rc after unmount"
    fi
    check_log "$CKPTFS_LOG"
    if is_mounted "$mnt"; then
        fail "$mnt still mounted after the daemon exited"
    fi
    note "unmounted; ckptfs exited 0, no sanitizer reports"
}

# reap PID: give PID (sent TERM) 5 s to exit, then KILL it; wait for it.
reap() {
    for _ in $(seq 100); do
        alive "$1" || break
        sleep 0.05
    done
    if alive "$1"; then
        note "cleanup: killing pid $1"
        kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
}

_ckptfs_cleanup() {
    local rc=$? m p left=
    set +e
    trap - EXIT INT TERM
    [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && _show_log
    for m in $(_mounts_below); do
        note "cleanup: unmounting $m"
        fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" ||
            umount -l "$m"
    done
    for p in $CKPTFS_PIDS; do
        alive "$p" && kill -TERM "$p" 2>/dev/null
    done
    for p in $CKPTFS_PIDS; do
        reap "$p"
    done
    for m in $(_mounts_below); do
        left="$left $m"
    done
    if [ -n "$TESTDIR" ]; then
        if [ -n "$left" ]; then
            note "cleanup: still mounted:$left; leaving $TESTDIR" >&2
            [ "$rc" -eq 0 ] && rc=1
        elif [ "${CKPTFS_KEEP:-0}" = 1 ]; then
            note "cleanup: keeping $TESTDIR"
        else
            rm -rf "$TESTDIR"
        fi
    fi
    exit "$rc"
}
