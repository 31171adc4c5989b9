#!/bin/bash
# bench-cold.sh: first reads of views when the source is not in the page cache (issue 14).
#
# Usage: bench/bench-cold.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR]
#                            [--runs N] [--views "V1 V2 ..."] [--mount-opts OPTS]
#                            [--compare PATH] [--sshfs VIEWS|no]
#
# Needs root (/proc/sys/vm/drop_caches). For each view (a directory of the
# mount, or one file of it) the page cache is dropped, a fresh mount is
# made (with an empty ckptfs cache dir) and every file of the view is read
# start to end; then the page cache is dropped again and `dd iflag=direct
# bs=4M` reads as many bytes of the source as the view took from it
# (.ckptfs/stats source_bytes_read). Printed: both times, best of N runs,
# and their ratio (dd time / view time: >= 0.9 is the target), and the
# source bytes the view read against the model's bytes ("need"). "disk":
# the bytes the model's block device read during the cold read
# (/proc/diskstats: whole pages, read-ahead), against the model; "@disk":
# dd's time scaled to those bytes against the view's, the daemon's speed
# for what the page cache had to pull (ratio below @disk: the cost of
# pieces of rows sharing pages with other ranks'). "@warm": dd's time
# against the view's warm read, the most the daemon can do (a cast writes
# twice the source's bytes through FUSE: below 1, the transport or the
# computation bounds the view, not the storage). Also printed: the
# same view read again through a fresh mount with the source still in the
# page cache (warm: the daemon's own ceiling), the read-ahead and gather
# counters of .ckptfs/stats when the daemon has them, and with --compare PATH another
# daemon (e.g. a build of main) measured cold the same way in the same run.
#
# Shared storage (unless --sshfs no; needs sshd and sshfs): an sshd on
# 127.0.0.1 with a key made for the run serves the model dir; each view of
# --sshfs (default: all of --views) is read through ckptfs over a fresh
# sshfs mount, against a plain read of the same source bytes through a
# fresh sshfs mount (page cache dropped before each). Then 4 machines
# sharing that storage: 4 sshfs mounts, a ckptfs mount over each, reading
# tp-4/rank-0..3 at once: the bytes the sftp servers read (their
# /proc/PID/io rchar) against the model, each rank's against the source
# pages its bytes touch (the floor for any reader through a page cache,
# counted from the headers), and the wall time against one mount reading
# hf/ over sshfs.
set -u

BENCH_NAME=bench-cold
USAGE_LINES=2,30
. "$(dirname "$0")/lib.sh" || exit 1

CKPTFS=$TOP/src/ckptfs
RUNS=2
VIEWS="hf native hf@fp16 hf@fp32 tp-4/rank-0 pp-2/stage-1 per-layer/layer-003.safetensors"
MOUNT_OPTS=
COMPARE=
SSHFS_VIEWS=
BENCH_OPTS="$BENCH_OPTS --runs=RUNS --views=VIEWS --mount-opts=MOUNT_OPTS --compare=COMPARE --sshfs=SSHFS_VIEWS"
bench_args "$@"
positive_int "$RUNS" --runs
bench_paths
[ "$(id -u)" = 0 ] || die "needs root to drop the page cache"
[ -w /proc/sys/vm/drop_caches ] || die "/proc/sys/vm/drop_caches is not writable"
require_fuse
require_ckptfs
require_numpy
ensure_model

bench_work
build_reader

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# The source files, in order, and the model's bytes.
SOURCES=()
while IFS= read -r f; do SOURCES+=("$MODEL_DIR/$f"); done < <(
	cd "$MODEL_DIR" && ls -1 -- *.safetensors *.bin *.pt *.pth 2>/dev/null | LC_ALL=C sort)
[ ${#SOURCES[@]} -gt 0 ] || die "$MODEL_DIR: no source files"
MODEL_BYTES=0
# The block device holding the model (its /proc/diskstats line): the bytes
# the device really read for a view, pages and read-ahead included. Other
# processes reading it at the same time add to it; the least of the runs is kept.
DISK_DEV=$(stat -c '%Hd %Ld' "${SOURCES[0]}")
disk_read() { awk -v d="$DISK_DEV" '$1 " " $2 == d { printf "%.0f\n", $6 * 512; f = 1 } END { if (!f) print 0 }' /proc/diskstats; }
for f in "${SOURCES[@]}"; do MODEL_BYTES=$((MODEL_BYTES + $(stat -c %s "$f"))); done

stats_field() { # stats_field FILE KEY: a number from a saved .ckptfs/stats (0 if absent)
	"$PYTHON" -c 'import json,sys
j=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("/"):
    j=j.get(k, 0) if isinstance(j, dict) else 0
print(int(sum(j.values())) if isinstance(j, dict) else int(j))' "$1" "$2"
}

# direct_read BYTES: seconds for dd iflag=direct bs=4M of the first BYTES
# bytes of the source files, in order (rounded up to 4 MiB blocks).
direct_read() {
	local need=$1 f size blocks t0 t1
	t0=$(now)
	for f in "${SOURCES[@]}"; do
		[ "$need" -gt 0 ] || break
		size=$(stat -c %s "$f")
		[ "$size" -lt "$need" ] && blocks=$(( (size + 4194303) / 4194304 )) ||
			blocks=$(( (need + 4194303) / 4194304 ))
		dd if="$f" of=/dev/null bs=4M iflag=direct count="$blocks" status=none ||
			die "dd $f failed"
		need=$((need - blocks * 4194304))
	done
	t1=$(now)
	elapsed "$t0" "$t1"
}

# view_read VIEW RUN: a fresh mount, read VIEW; sets VSECS, VBYTES and
# NEED (source bytes the view read); keeps the stats in $WORK/stats.
view_read() {
	local view=$1 run=$2 daemon=${3:-$CKPTFS} src=${4:-$MODEL_DIR} t0 t1 files=() opts
	opts="cache_dir=$WORK/cache-$run"
	[ -n "$MOUNT_OPTS" ] && opts="$opts,$MOUNT_OPTS"
	mount_fs "mnt" "$daemon" -f -o "$opts" "$src" "$WORK/mnt"
	if [ -d "$MNT/$view" ]; then
		while IFS= read -r f; do files+=("$view/$f"); done < <(view_files "$MNT/$view")
	elif [ -f "$MNT/$view" ]; then
		files=("$view")
	else
		die "$view: not in the mount"
	fi
	local d0
	d0=$(disk_read)
	t0=$(now)
	VBYTES=$(cd "$MNT" && "$READER" "${files[@]}") || die "reading $view failed"
	t1=$(now)
	VSECS=$(elapsed "$t0" "$t1")
	DISK=$(($(disk_read) - d0))
	cp "$MNT/.ckptfs/stats" "$WORK/stats"
	NEED=$(stats_field "$WORK/stats" source_bytes_read)
	umount_fs
	rm -rf "$WORK/cache-$run"
}

echo "model: $MODEL_DIR ($(gb "$MODEL_BYTES"), ${#SOURCES[@]} file(s)); runs: $RUNS; load $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$COMPARE" ] && { case $COMPARE in /*) ;; *) COMPARE=$PWD/$COMPARE ;; esac; [ -x "$COMPARE" ] || die "$COMPARE: not an executable"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
printf '%-32s %8s %6s %6s %7s %7s %7s %6s %6s %6s' view bytes need disk "cold s" "warm s" "dd s" ratio "@disk" "@warm"
[ -n "$COMPARE" ] && printf ' %7s %6s' "cmp s" "cmp"
printf ' %s\n' read-ahead
for view in $VIEWS; do
	best_v= best_d= best_w= best_c= best_disk=
	for run in $(seq "$RUNS"); do
		if [ -n "$COMPARE" ]; then
			drop_caches
			view_read "$view" "$run" "$COMPARE"
			best_c=$(min "$VSECS" "$best_c")
		fi
		drop_caches
		view_read "$view" "$run"
		best_v=$(min "$VSECS" "$best_v")
		[ -z "$best_disk" ] || [ "$DISK" -lt "$best_disk" ] && best_disk=$DISK
		cp "$WORK/stats" "$WORK/stats.cold"
		view_read "$view" "$run"
		best_w=$(min "$VSECS" "$best_w")
		drop_caches
		d=$(direct_read "$NEED")
		best_d=$(min "$d" "$best_d")
	done
	cp "$WORK/stats.cold" "$WORK/stats"
	ra=$(stats_field "$WORK/stats" readahead/source_bytes_requested)
	ahead=$(stats_field "$WORK/stats" readahead/view_bytes_ahead)
	used=$(stats_field "$WORK/stats" readahead/view_bytes_used)
	greq=$(stats_field "$WORK/stats" gather/requests)
	gbytes=$(stats_field "$WORK/stats" gather/source_bytes_read)
	# @disk: dd's time scaled to the bytes the device read for the view
	# (whole pages, read-ahead) against the view's: the daemon's speed
	# for what the page cache had to pull; ratio vs @disk is what page
	# granularity costs (pieces of rows sharing pages with other ranks').
	printf '%-32s %8s %6s %6s %7.2f %7.2f %7.2f %5sx %5sx %5sx' "$view" "$(gb "$VBYTES")" \
		"$(awk -v a="$NEED" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }')" \
		"$(awk -v a="$best_disk" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }')" \
		"$best_v" "$best_w" "$best_d" "$(ratio "$best_d" "$best_v")" \
		"$(awk -v d="$best_d" -v a="$best_disk" -v n="$NEED" -v v="$best_v" 'BEGIN { printf "%.2f", (n > 0 ? d * a / n : 0) / v }')" \
		"$(ratio "$best_d" "$best_w")"
	[ -n "$COMPARE" ] && printf ' %7.2f %5sx' "$best_c" "$(ratio "$best_d" "$best_c")"
	printf ' %s asked; view %s ahead, %s used' "$(gb "$ra")" "$(gb "$ahead")" "$(gb "$used")"
	[ "$greq" -gt 0 ] && printf '; gathered %s in %s preads' "$(gb "$gbytes")" "$greq"
	printf '\n'
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------
# Shared storage: the source behind sshfs.
[ "$SSHFS_VIEWS" = no ] && exit 0
[ -n "$SSHFS_VIEWS" ] || SSHFS_VIEWS=$VIEWS
if ! command -v sshfs >/dev/null || [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ]; then
	echo "sshfs: skipped (needs the sshfs and openssh-server packages)"
	exit 0
fi
SSH=$WORK/ssh
mkdir -p "$SSH" /run/sshd
chmod 700 "$SSH"
ssh-keygen -q -t ed25519 -N '' -f "$SSH/host" || die "ssh-keygen failed"
ssh-keygen -q -t ed25519 -N '' -f "$SSH/id" || die "ssh-keygen failed"
cp "$SSH/id.pub" "$SSH/authorized_keys"
PORT=$((20000 + RANDOM % 20000))
cat >"$SSH/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $SSH/host
AuthorizedKeysFile $SSH/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $SSH/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
/usr/sbin/sshd -D -f "$SSH/sshd_config" -E "$SSH/sshd.log" &
SSHD_PID=$!
PIDS="$PIDS $SSHD_PID"
for _ in $(seq 50); do
	grep -q "Server listening" "$SSH/sshd.log" 2>/dev/null && break
	sleep 0.1
done
kill -0 "$SSHD_PID" 2>/dev/null || { cat "$SSH/sshd.log" >&2; die "sshd did not start"; }

# sshfs_mount NAME: a fresh sshfs mount of MODEL_DIR at $WORK/NAME; sets
# SMNT, SMNT_PID (MNT and MNT_PID are left as they were).
sshfs_mount() {
	local m=${MNT:-} p=${MNT_PID:-}
	mount_fs "$1" sshfs -f -o ro,port="$PORT",IdentityFile="$SSH/id",StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null,LogLevel=ERROR,max_conns=1 \
		"root@127.0.0.1:$MODEL_DIR" "$WORK/$1"
	SMNT=$MNT SMNT_PID=$MNT_PID MNT=$m MNT_PID=$p
}
sshfs_umount() { # sshfs_umount MNT PID
	fusermount3 -u "$1" || die "fusermount3 -u $1 failed"
	wait "$2" 2>/dev/null
	forget_pid "$2"
}
# server_rchar: bytes read so far by the sftp servers under our sshd.
server_rchar() {
	local total=0 p q
	for p in $(pgrep -f /usr/lib/openssh/sftp-server); do
		q=$p
		while [ "$q" -gt 1 ] && [ "$q" != "$SSHD_PID" ]; do
			q=$(awk '{ print $4 }' "/proc/$q/stat" 2>/dev/null) || break
			[ -n "$q" ] || break
		done
		[ "$q" = "$SSHD_PID" ] && [ -r "/proc/$p/io" ] || continue
		total=$((total + $(awk '/^rchar/ { print $2 }' "/proc/$p/io")))
	done
	echo "$total"
}
# plain_sshfs BYTES: seconds to read the first BYTES bytes of the source
# through a fresh sshfs mount.
plain_sshfs() {
	local need=$1 f size t0 t1
	sshfs_mount src-plain
	t0=$(now)
	for f in "${SOURCES[@]}"; do
		[ "$need" -gt 0 ] || break
		size=$(stat -c %s "$f")
		[ "$size" -lt "$need" ] && n=$size || n=$need
		head -c "$n" "$SMNT/$(basename "$f")" >/dev/null || die "reading $f over sshfs failed"
		need=$((need - n))
	done
	t1=$(now)
	sshfs_umount "$SMNT" "$SMNT_PID"
	elapsed "$t0" "$t1"
}

echo
echo "source on sshfs (sshd on 127.0.0.1:$PORT, one sftp connection per mount); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-32s %8s %6s %7s %7s %6s %s\n' view bytes need "view s" "plain s" ratio "server read"
for view in $SSHFS_VIEWS; do
	drop_caches
	sshfs_mount src-ckptfs
	sm=$SMNT sp=$SMNT_PID
	view_read "$view" 1 "$CKPTFS" "$sm"
	srv=$(server_rchar) # the only sftp server alive: this mount's
	sshfs_umount "$sm" "$sp"
	drop_caches
	p=$(plain_sshfs "$NEED")
	printf '%-32s %8s %6s %7.2f %7.2f %5sx %s\n' "$view" "$(gb "$VBYTES")" \
		"$(awk -v a="$NEED" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }')" "$VSECS" "$p" "$(ratio "$p" "$VSECS")" \
		"$(awk -v a="$srv" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }') of the model"
done

# One mount reading hf/ over sshfs: the wall time the 4 ranks are held to.
drop_caches
sshfs_mount src-ckptfs
sm=$SMNT sp=$SMNT_PID
view_read hf 1 "$CKPTFS" "$sm"
hf_secs=$VSECS
sshfs_umount "$sm" "$sp"

# page_floor: for each rank of tp-4, the bytes of the source pages its
# bytes touch (LLaMA names: o_proj/down_proj split by columns, the other
# matrices by rows, vectors whole), from the headers: what any reader
# through a page cache must pull. Prints the four, space separated.
page_floor() {
	"$PYTHON" - "${SOURCES[@]}" <<'PY'
import json, struct, sys
pg, ranks = 4096, 4
pages = [set() for _ in range(ranks)]
kinds = {}  # kind: [tensor bytes, pages the ranks pull in all, piece bytes, row bytes]
size_of = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1}
for fi, path in enumerate(sys.argv[1:]):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    base = 8 + n
    for name, t in head.items():
        if name == "__metadata__":
            continue
        lo = base + t["data_offsets"][0]
        size = t["data_offsets"][1] - t["data_offsets"][0]
        def touch(k, a, m):
            pages[k].update((fi, p) for p in range(a // pg, (a + m - 1) // pg + 1))
        before = sum(len(p) for p in pages)
        kind = name.rsplit(".", 2)[-2] if len(t["shape"]) == 2 else "vectors"
        for k in range(ranks):
            if len(t["shape"]) != 2:
                touch(k, lo, size)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                rows, cols = t["shape"]
                row = cols * size_of.get(t["dtype"], 2)
                piece = row // ranks
                for r in range(rows):
                    touch(k, lo + r * row + k * piece, piece)
            else:
                part = size // ranks
                touch(k, lo + k * part, part)
        kd = kinds.setdefault(kind, [0, 0, 0, 0])
        kd[0] += size
        kd[1] += (sum(len(p) for p in pages) - before) * pg
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            kd[3] = t["shape"][1] * size_of.get(t["dtype"], 2)
            kd[2] = kd[3] // ranks
print(" ".join(str(len(p) * pg) for p in pages))
# With -o direct_min=4096 (the default on a network file system) pieces of
# a page or more are read as their own bytes, not their pages.
print(sum(len(p) * pg for p in pages) - sum(v[1] - v[0] for v in kinds.values() if v[2] >= pg))
total = sum(v[0] for v in kinds.values())
for kind, (size, pulled, piece, row) in sorted(kinds.items(), key=lambda kv: kv[1][0] - kv[1][1]):
    if pulled <= size * 1.01:
        continue
    why = (f"a rank's piece of each {row} B row is {piece} B" + (", under a page: every rank pulls every page" if piece < pg
           else f", at offsets that straddle pages: {piece // pg + 1} pages for {piece / pg:g}") if piece else
           "replicated: every rank reads them whole" if kind == "vectors" else "pages shared at the ranks' boundaries")
    print(f"  {kind}: {size / total:.0%} of the model, pulled {pulled / size:.2f}x by the 4 ranks ({why}); adds {(pulled - size) / total:.2f}x")
PY
}

# 4 machines: 4 sshfs mounts, a ckptfs over each, the 4 ranks at once.
drop_caches
smnts=() spids=() cmnts=() cpids=() servers=()
r0=$(server_rchar)
for k in 0 1 2 3; do
	old=" $(pgrep -d ' ' -f /usr/lib/openssh/sftp-server) "
	sshfs_mount "src-node$k"
	smnts+=("$SMNT") spids+=("$SMNT_PID")
	m=$MNT p=$MNT_PID
	mount_fs "node$k" "$CKPTFS" -f -o "cache_dir=$WORK/cache-node$k${MOUNT_OPTS:+,$MOUNT_OPTS}" "$SMNT" "$WORK/node$k"
	cmnts+=("$MNT") cpids+=("$MNT_PID")
	MNT=$m MNT_PID=$p
	# this mount's sftp server (sshfs connects on first use: ckptfs's
	# mount read the headers): the one that was not there before
	for q in $(pgrep -f /usr/lib/openssh/sftp-server); do
		case $old in *" $q "*) ;; *) servers[$k]=$q ;; esac
	done
done
t0=$(now)
rpids=()
for k in 0 1 2 3; do
	(cd "${cmnts[$k]}/tp-4/rank-$k" && "$READER" $(ls)) >"$WORK/rank-$k.bytes" &
	rpids+=($!)
done
for p in "${rpids[@]}"; do wait "$p" || die "a rank read failed"; done
t1=$(now)
wall=$(elapsed "$t0" "$t1")
served=$(server_rchar)
srv=$((served - r0))
per_rank=()
for k in 0 1 2 3; do
	per_rank[$k]=$(awk '/^rchar/ { print $2 }' "/proc/${servers[$k]:-0}/io" 2>/dev/null || echo 0)
done
need4=0
for k in 0 1 2 3; do
	need4=$((need4 + $(stats_field <(cat "${cmnts[$k]}/.ckptfs/stats") source_bytes_read)))
done
for k in 0 1 2 3; do
	MNT=${cmnts[$k]} MNT_PID=${cpids[$k]}
	umount_fs
	sshfs_umount "${smnts[$k]}" "${spids[$k]}"
done
echo "4 mounts over 4 sshfs mounts reading tp-4/rank-0..3 at once: wall $(printf %.2f "$wall") s" \
	"(one mount reading hf/ over sshfs: $(printf %.2f "$hf_secs") s, ratio $(ratio "$wall" "$hf_secs"), target <= 1.2)"
echo "  sftp servers read $(gb "$srv") = $(awk -v a="$srv" -v b="$MODEL_BYTES" 'BEGIN { printf "%.2f", a / b }')x the model" \
	"(target <= 1.3); the ranks' stats: source bytes read $(gb "$need4") = $(awk -v a="$need4" -v b="$MODEL_BYTES" 'BEGIN { printf "%.2f", a / b }')x"
page_floor >"$WORK/floor"
read -r -a floor <"$WORK/floor"
floor_sum=0
for k in 0 1 2 3; do
	floor_sum=$((floor_sum + ${floor[$k]:-0}))
	echo "  rank-$k: its sftp server read $(gb "${per_rank[$k]}") ($(awk -v a="${per_rank[$k]}" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }')x the model);" \
		"the source pages its bytes touch: $(gb "${floor[$k]:-0}")"
done
echo "  at page granularity the 4 ranks must pull $(awk -v a="$floor_sum" -v b="$MODEL_BYTES" 'BEGIN { printf "%.2f", a / b }')x the model" \
	"(pieces of o_proj/down_proj rows share pages with other ranks' pieces); the replication by tensor:"
tail -n +3 "$WORK/floor"
echo "  with pieces of a page or more read as their own bytes (-o direct_min=4096, the default on a network file system):" \
	"$(awk -v a="$(sed -n 2p "$WORK/floor")" -v b="$MODEL_BYTES" 'BEGIN { printf "%.2f", a / b }')x the model"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
