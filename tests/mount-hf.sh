#!/bin/bash
# mount-hf.sh - mount generated HuggingFace checkpoints and check the views.
#
# For each preset (tiny-llama, gpt2, gpt2-noprefix, mixed-dtypes; override
# with CKPTFS_PRESETS): generate it with examples/gen-model.py, mount it,
#   - ls of the root gives exactly the views the model allows (README, hf,
#     native, per-layer, pp-2, tensors, tp-2, tp-4; only README, hf, tensors
#     for an unknown architecture; VIEW@DTYPE dirs are not listed);
#   - tests/check_mount.py: hf/ identical to the source, tensors/*.npy
#     values/dtypes/shapes/xattrs, odd preads, README (see that file);
#   - every kind of write fails with EROFS ("Read-only file system") and
#     leaves stat, contents, listings and the source unchanged;
#   - unmount; the daemon exits 0 with no sanitizer report.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

# stat fields that a refused write must not change
sig() {
    stat -c '%F size=%s mtime=%Y ctime=%Z mode=%a links=%h uid=%u gid=%g' "$1"
}

# expect_erofs WHAT CMD...: CMD must fail and print "Read-only file system"
expect_erofs() {
    local what=$1 out rc
    shift
    rc=0
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" -eq 0 ]; then
        fail "$what: succeeded on a read-only mount ($*)"
    fi
    case $out in
    *"Read-only file system"*) ;;
    *) fail "$what: failed with status $rc but not EROFS: $out" ;;
    esac
    note "  EROFS ok: $what"
}

check_writes() {
    local mnt=$1 src=$2 npy f after srcsum_before srcsum_after
    npy=$(cd "$mnt/tensors" && LC_ALL=C ls | head -n 1)
    [ -n "$npy" ] || fail "tensors/ is empty"
    note "write attempts on $mnt (tensor file $npy)"

    srcsum_before=$(cd "$src" && stat -c "%n %F %s %Y %a" ./* && md5sum ./*)
    declare -A before
    for f in "$mnt" "$mnt/README" "$mnt/hf" "$mnt/hf/config.json" \
             "$mnt/tensors" "$mnt/tensors/$npy"; do
        before[$f]=$(sig "$f")
    done
    cp "$mnt/hf/config.json" "$TESTDIR/config.before"
    cp "$mnt/README" "$TESTDIR/README.before"

    expect_erofs "touch new file" touch "$mnt/newfile"
    expect_erofs "touch new file in hf/" touch "$mnt/hf/newfile"
    expect_erofs "touch existing file (utimens)" touch "$mnt/README"
    expect_erofs "append with >>" bash -c 'echo x >> "$1"' _ "$mnt/README"
    expect_erofs "append to hf/config.json" \
        bash -c 'echo x >> "$1"' _ "$mnt/hf/config.json"
    expect_erofs "overwrite with >" \
        bash -c 'echo x > "$1"' _ "$mnt/hf/config.json"
    expect_erofs "open O_RDWR" "$PYTHON" -c '
import os, sys
os.open(sys.argv[1], os.O_RDWR)' "$mnt/tensors/$npy"
    expect_erofs "open O_WRONLY|O_CREAT|O_EXCL" "$PYTHON" -c '
import os, sys
os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)' \
        "$mnt/tensors/new.npy"
    expect_erofs "rm README" rm -f "$mnt/README"
    expect_erofs "rm hf/config.json" rm -f "$mnt/hf/config.json"
    expect_erofs "rm tensors/$npy" rm -f "$mnt/tensors/$npy"
    expect_erofs "mkdir" mkdir "$mnt/newdir"
    expect_erofs "mkdir in tensors/" mkdir "$mnt/tensors/newdir"
    expect_erofs "rmdir hf" rmdir "$mnt/hf"
    expect_erofs "setfattr" setfattr -n user.test -v 1 "$mnt/README"
    expect_erofs "setfattr on a tensor" \
        setfattr -n user.ckptfs.dtype -v F32 "$mnt/tensors/$npy"
    expect_erofs "removexattr" \
        setfattr -x user.ckptfs.dtype "$mnt/tensors/$npy"
    expect_erofs "chmod" chmod 600 "$mnt/README"
    expect_erofs "chmod dir" chmod 700 "$mnt/hf"
    expect_erofs "chown" chown 1:1 "$mnt/hf/config.json"
    expect_erofs "truncate" truncate -s 0 "$mnt/hf/config.json"
    expect_erofs "truncate grow" truncate -s 1M "$mnt/tensors/$npy"
    expect_erofs "rename" mv "$mnt/README" "$mnt/README.old"
    expect_erofs "rename into dir" mv "$mnt/README" "$mnt/hf/README"
    expect_erofs "symlink" ln -s README "$mnt/link"
    expect_erofs "hard link" ln "$mnt/README" "$mnt/hf/README.link"
    expect_erofs "mkfifo" mkfifo "$mnt/fifo"

    for f in "${!before[@]}"; do
        after=$(sig "$f")
        [ "$after" = "${before[$f]}" ] ||
            fail "stat of $f changed: before: ${before[$f]}; after: $after"
    done
    cmp "$TESTDIR/config.before" "$mnt/hf/config.json" ||
        fail "hf/config.json changed"
    cmp "$TESTDIR/README.before" "$mnt/README" || fail "README changed"
    cmp "$src/config.json" "$mnt/hf/config.json" ||
        fail "hf/config.json differs from the source"
    for f in newfile newdir link fifo README.old; do
        [ ! -e "$mnt/$f" ] && [ ! -L "$mnt/$f" ] ||
            fail "$f exists after a refused write"
    done
    [ ! -e "$mnt/tensors/new.npy" ] || fail "tensors/new.npy exists"
    [ ! -e "$mnt/hf/README" ] || fail "hf/README exists"
    srcsum_after=$(cd "$src" && stat -c "%n %F %s %Y %a" ./* && md5sum ./*)
    [ "$srcsum_after" = "$srcsum_before" ] || fail "the source directory changed"
    note "stat, contents and source unchanged after refused writes"
}

check_root() {
    local mnt=$1 want=$2 got
    got=$(cd "$mnt" && LC_ALL=C ls | tr '\n' ' ')
    [ "$got" = "$want" ] || fail "ls $mnt gives '$got', expected '$want'"
    note "ls of the root: $got"
}

for preset in ${CKPTFS_PRESETS:-tiny-llama gpt2 gpt2-noprefix mixed-dtypes}; do
    note "=== $preset"
    src=$TESTDIR/src-$preset
    mnt=$TESTDIR/mnt-$preset
    gen_model "$preset" "$src"
    note "generated $(cd "$src" && LC_ALL=C ls | tr '\n' ' ')"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    case $preset in
    mixed-dtypes) root="README hf tensors " ;; # unknown architecture: no layout
    # 4 heads (2 kv heads for tiny-llama), 2 layers: tp-2, tp-4 and pp-2 are offered;
    # LLaMA and GPT-2 have GGUF tables
    *) root="README gguf hf native per-layer pp-2 tensors tp-2 tp-4 " ;;
    esac
    check_root "$mnt" "$root"
    note "check_mount.py $src $mnt"
    "$PYTHON" "$srcdir/tests/check_mount.py" "$src" "$mnt" ||
        fail "check_mount.py failed for $preset"
    check_writes "$mnt" "$src"
    check_root "$mnt" "$root"
    umount_ckptfs
    note "=== $preset: PASS"
done
note "PASS"
