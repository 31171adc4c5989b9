#!/bin/bash
# mount-lazy.sh - directories built on first use (VIEW@DTYPE, per-layer/,
# tp-N/, pp-N/) give the same attributes before and after they are built,
# and asking for them while another thread builds them is safe.
#
#   (a) links: tiny-llama, a fresh mount; the first thing asked of each
#       lazily built directory is its stat, and its st_nlink must be 2 plus
#       the number of its subdirectories as listed afterwards (4 for
#       tp-2@fp16: rank-0 and rank-1).  The kernel keeps that first answer
#       for a day, and find(1) trusts it to skip leaf directories, so a
#       count taken before the directory exists (2) is wrong for good.
#   (b) race, tiny-llama: one thread stats tp-2@fp16 in a loop with
#       AT_STATX_FORCE_SYNC (so every stat reaches the daemon: GETATTR)
#       while another lists it for the first time (which builds it); every
#       stat must say 4 links.
#   (c) race, one file of 20000 small tensors: the same loop on
#       tensors@fp16 while it is listed (a build long enough to overlap);
#       the listing must hold 20000 .npy files, every stat 2 links, the
#       daemon must live and its log stay free of sanitizer reports (once a
#       use after free under ASan, a data race under TSan: the stat counted
#       the children while the builder grew their array).
#
# CKPTFS_CASES selects parts by name (default: links race many).
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

# hammer.py DIR WANT_NLINK: stat DIR in a loop (statx, AT_STATX_FORCE_SYNC)
# while the main thread lists DIR for the first time; prints the entry count
# and the link counts seen, exits 1 if any differs from WANT_NLINK.
HAMMER=$TESTDIR/hammer.py
cat >"$HAMMER" <<'EOF'
import ctypes, os, sys, threading
path, want = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS = -100, 0x2000, 0x7FF
buf = ctypes.create_string_buffer(256)  # struct statx; stx_nlink is the u32 at 16

def nlink():
    if libc.statx(AT_FDCWD, path.encode(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int.from_bytes(buf.raw[16:20], "little")

seen, stop, errors = {}, threading.Event(), []
first = nlink()  # LOOKUP and GETATTR before anything is built
seen[first] = 1

def loop():
    try:
        while not stop.is_set():
            n = nlink()
            seen[n] = seen.get(n, 0) + 1
    except OSError as e:
        errors.append(str(e))

t = threading.Thread(target=loop)
t.start()
try:
    names = os.listdir(path)  # the first listing builds the directory
finally:
    for _ in range(200):  # and some more stats after it is built
        n = nlink()
        seen[n] = seen.get(n, 0) + 1
    stop.set()
    t.join()
print("%d entries; first stat %d links; links seen (count): %s" %
      (len(names), first, ", ".join("%d (%d)" % kv for kv in sorted(seen.items()))))
if errors:
    print("stat failed: " + errors[0])
sys.exit(1 if errors or set(seen) != {want} else 0)
EOF

# subdirs DIR: how many directories DIR holds.
subdirs() {
    find "$1" -mindepth 1 -maxdepth 1 -type d | wc -l
}

# ---- (a) st_nlink of a directory that is not built yet ----
case_links() {
    local src=$TESTDIR/src-a mnt=$TESTDIR/mnt-a d first n want checked=
    note "=== (a) st_nlink of lazily built directories, asked before anything else"
    gen_model tiny-llama "$src" >/dev/null
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    for d in tp-2@fp16 tp-2 pp-2 pp-2@bf16 per-layer per-layer@fp32 tensors@fp16 native@bf16 hf@fp32; do
        first=$(stat -c %h "$mnt/$d") || fail "stat $d failed"
        n=$(subdirs "$mnt/$d")
        want=$((2 + n))
        [ "$first" -eq "$want" ] ||
            fail "$d: st_nlink $first on the first stat, but it holds $n directories (want $want)"
        checked="$checked $d:$first"
    done
    [ "$(stat -c %h "$mnt/tp-2@fp16")" -eq 4 ] || fail "tp-2@fp16: st_nlink is not 4"
    [ -d "$mnt/tp-2@fp16/rank-0" ] && [ -d "$mnt/tp-2@fp16/rank-1" ] || fail "tp-2@fp16 lacks rank-0 or rank-1"
    note "  first st_nlink right:$checked"
    umount_ckptfs
}

# ---- (b) GETATTR while the directory is built ----
case_race() {
    local src=$TESTDIR/src-b mnt=$TESTDIR/mnt-b out
    note "=== (b) stat tp-2@fp16 in a loop while it is listed for the first time"
    gen_model tiny-llama "$src" >/dev/null
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    out=$("$PYTHON" "$HAMMER" "$mnt/tp-2@fp16" 4 2>&1) || {
        printf '%s\n' "$out" >&2
        fail "tp-2@fp16: a stat gave another link count than 4 (above)"
    }
    note "  tp-2@fp16: $out"
    alive "$CKPTFS_PID" || fail "the daemon died"
    umount_ckptfs
}

case_many() {
    local src=$TESTDIR/src-c mnt=$TESTDIR/mnt-c out count=20000
    note "=== (c) stat tensors@fp16 in a loop while its $count files are built"
    mkdir -p "$src"
    "$PYTHON" - "$srcdir/examples/gen-model.py" "$src/model.safetensors" "$count" <<'EOF'
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("gen_model", sys.argv[1])
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
n = int(sys.argv[3])
g.write_safetensors(sys.argv[2], [g.Tensor("t.%05d" % i, "F32", [2], np.array([i, -i], np.float32))
                                  for i in range(n)])
EOF
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    out=$("$PYTHON" "$HAMMER" "$mnt/tensors@fp16" 2 2>&1) || {
        printf '%s\n' "$out" >&2
        fail "tensors@fp16: a stat failed or gave another link count than 2 (above)"
    }
    note "  tensors@fp16: $out"
    case $out in
    "$count entries;"*) ;;
    *) fail "tensors@fp16: expected $count entries: $out" ;;
    esac
    alive "$CKPTFS_PID" || fail "the daemon died"
    umount_ckptfs
}

for c in ${CKPTFS_CASES:-links race many}; do
    case $c in
    links | race | many) "case_$c" ;;
    *) hard_error "unknown case '$c' in CKPTFS_CASES (links race many)" ;;
    esac
done
note "PASS"
