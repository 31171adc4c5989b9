#!/bin/bash
# mount-hub.sh - a Hugging Face hub cache repository as the source.
#
# The hub cache keeps a model as models--ORG--NAME/ with blobs/ (the files,
# named by hash), refs/main (a commit) and snapshots/COMMIT/ whose entries
# are relative symlinks into ../../blobs.  The test builds that layout from
# a generated tiny-llama (2 shards + index) in two revisions, then:
#   (a) mounting the repository serves refs/main's snapshot: hf/ equals the
#       generated files (tests/check_mount.py), README names the revision,
#       and `ckptfs inspect` prints it;
#   (b) -o revision=COMMIT and -o revision=REF (refs/v2) pick the other
#       snapshot, whose config.json differs;
#   (c) mounting the snapshot directory itself is refused (its links leave
#       it) with one line that says to mount the repository;
#   (d) refused with the exact message: a revision that is no plain name,
#       an unknown snapshot, two snapshots and no refs/main, refs/main that
#       names no snapshot, and -o revision on a source that is no hub
#       repository;
#   (e) a snapshot link that leaves the repository (../../../outside) is
#       not followed: the file is not shown and a warning names it.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

GEN=$TESTDIR/gen
gen_model tiny-llama "$GEN"

# make_snapshot REPO COMMIT DIR: store DIR's files as blobs of REPO and link
# them from snapshots/COMMIT, as huggingface_hub does.
make_snapshot() {
    local repo=$1 commit=$2 dir=$3 f sum
    mkdir -p "$repo/blobs" "$repo/refs" "$repo/snapshots/$commit"
    for f in "$dir"/*; do
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        cp "$f" "$repo/blobs/$sum"
        ln -s "../../blobs/$sum" "$repo/snapshots/$commit/$(basename "$f")"
    done
}

REPO=$TESTDIR/hub/models--test--tiny-llama
C1=0123456789abcdef0123456789abcdef01234567
C2=fedcba9876543210fedcba9876543210fedcba98
make_snapshot "$REPO" "$C1" "$GEN"
V2=$TESTDIR/gen-v2
cp -r "$GEN" "$V2"
sed -i 's/"rms_norm_eps"/"ckptfs_test_revision": 2, "rms_norm_eps"/' "$V2/config.json"
grep -q ckptfs_test_revision "$V2/config.json" || fail "could not edit config.json of revision 2"
make_snapshot "$REPO" "$C2" "$V2"
printf '%s' "$C1" >"$REPO/refs/main"
printf '%s\n' "$C2" >"$REPO/refs/v2"
MNT=$TESTDIR/mnt
mkdir "$MNT"

note "=== (a) the repository, refs/main"
mount_ckptfs "$REPO" "$MNT"
"$PYTHON" "$srcdir/tests/check_mount.py" "$GEN" "$MNT" || fail "check_mount.py failed on the hub repository"
grep -q "^Revision: *$C1 of the Hugging Face hub repository $REPO\$" "$MNT/README" ||
    fail "README does not name revision $C1: $(cat "$MNT/README")"
umount_ckptfs
"$CKPTFS" inspect "$REPO" >"$TESTDIR/inspect.out" || fail "ckptfs inspect $REPO failed"
grep -q "^revision: *$C1 " "$TESTDIR/inspect.out" || fail "inspect does not print the revision: $(cat "$TESTDIR/inspect.out")"

note "=== (b) other revisions"
for rev in "$C2" v2; do
    mount_ckptfs "$REPO" "$MNT" -o "revision=$rev"
    cmp "$MNT/hf/config.json" "$V2/config.json" || fail "revision=$rev: config.json is not revision 2's"
    cmp "$MNT/hf/model-00001-of-00002.safetensors" "$V2/model-00001-of-00002.safetensors" ||
        fail "revision=$rev: shard 1 differs"
    umount_ckptfs
done

note "=== (c) the snapshot directory itself"
expect_refused "ckptfs: $REPO/snapshots/$C1/model.safetensors.index.json: symlink leads outside the source directory (the source is a snapshot of a Hugging Face hub repository: mount the repository $REPO)" \
    -f "$REPO/snapshots/$C1" "$MNT"

note "=== (d) bad revisions"
expect_refused "ckptfs: $REPO: -o revision=../x: not a branch, tag or commit name" -f -o revision=../x "$REPO" "$MNT"
expect_refused "ckptfs: $REPO/snapshots/nosuch: no such snapshot" -f -o revision=nosuch "$REPO" "$MNT"
rm "$REPO/refs/main"
expect_refused "ckptfs: $REPO: 2 snapshots and no refs/main; pick one with -o revision=COMMIT" -f "$REPO" "$MNT"
printf 'deadbeef\n' >"$REPO/refs/main"
expect_refused "ckptfs: $REPO/snapshots/deadbeef: no such snapshot (named by refs/main)" -f "$REPO" "$MNT"
printf '../../etc\n' >"$REPO/refs/main"
expect_refused "ckptfs: $REPO/refs/main: not a commit name" -f "$REPO" "$MNT"
printf '%s\n' "$C1" >"$REPO/refs/main"
expect_refused "ckptfs: $GEN: -o revision=main: not a Hugging Face hub repository (no snapshots/ and blobs/)" \
    -f -o revision=main "$GEN" "$MNT"

note "=== (e) a link out of the repository"
printf 'outside\n' >"$TESTDIR/hub/outside.txt"
ln -s ../../../outside.txt "$REPO/snapshots/$C1/outside.txt"
mount_ckptfs "$REPO" "$MNT"
[ ! -e "$MNT/hf/outside.txt" ] || fail "hf/outside.txt is shown: a link out of the repository was followed"
cmp "$MNT/hf/config.json" "$GEN/config.json" || fail "config.json differs"
umount_ckptfs
grep -q "$REPO/snapshots/$C1/outside.txt: symlink leads outside the source directory" "$CKPTFS_LOG" ||
    fail "no warning names outside.txt: $(cat "$CKPTFS_LOG")"

note "all hub cases passed"
