#!/bin/bash
# run.sh -- build the libFuzzer harnesses of tests/fuzz, replay tests/fuzz/regress, then fuzz each for a set time.
#
# Usage: tests/fuzz/run.sh [SECONDS_PER_HARNESS] [OUTDIR]
#   SECONDS_PER_HARNESS  default 10 (CI: about a minute for the six harnesses)
#   OUTDIR               build, seeds, corpora, logs and crash artifacts;
#                        default ${TMPDIR:-/tmp}/ckptfs-fuzz
# Environment:
#   HARNESSES="safetensors index config jsonscan layout views lora_config gguf_vocab pickle zip torch dcp"   which ones, in this order
#   FUZZ_RUNS=N      also stop each harness after N executions (-runs=N)
#   FUZZ_ARGS="..."  more libFuzzer flags, e.g. -jobs or -dict
#   CC=clang         a clang with libFuzzer (-fsanitize=fuzzer)
#
# The harnesses are built straight from src/*/*.c (all but the FUSE front-end:
# main.c, main_nofuse.c, fuse_ops.c) with ASan and UBSan, no configure needed.
# Every file under tests/fuzz/regress/<harness>/ is replayed first: each is an
# input that once crashed, kept as a regression test. Per harness the script
# prints executions, new crashes and coverage, and exits 1 if anything crashed.
set -u

SECS=${1:-10}
OUT=${2:-${TMPDIR:-/tmp}/ckptfs-fuzz}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CC=${CC:-clang}
HARNESSES=${HARNESSES:-safetensors index config jsonscan layout views lora_config gguf_vocab pickle zip torch dcp}
JOBS=$(nproc 2>/dev/null || echo 2)

case $SECS in '' | *[!0-9]*) echo "run.sh: SECONDS_PER_HARNESS must be a number, not '$SECS'" >&2; exit 2 ;; esac

max_len() {
	case $1 in
	safetensors | index | config | jsonscan | lora_config | pickle) echo 4096 ;;
	zip | torch | dcp) echo 16384 ;;
	layout | views) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)

# ---- a clang that links libFuzzer ----
probe() {
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$OUT/probe.c"
	"$CC" -fsanitize=fuzzer,address,undefined "$OUT/probe.c" -o "$OUT/probe" >/dev/null 2>&1
}
if ! probe; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "run.sh: no clang with libFuzzer; installing clang libclang-rt-14-dev"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null; }
	fi
	probe || { echo "run.sh: $CC cannot build libFuzzer targets (need clang and libclang-rt-dev)" >&2; exit 2; }
fi
rm -f "$OUT/probe" "$OUT/probe.c"

# ---- build ----
mkdir -p "$OUT/include" "$OUT/obj" "$OUT/bin"
# src files include "config.h"; they only need the version (grep PACKAGE_ src/).
cat >"$OUT/include/config.h.new" <<'EOF'
/* config.h for the fuzz build (tests/fuzz/run.sh): no configure run. */
#define PACKAGE "ckptfs"
#define PACKAGE_NAME "ckptfs"
#define PACKAGE_VERSION "fuzz"
#define PACKAGE_STRING "ckptfs fuzz"
#define VERSION "fuzz"
EOF
# Replaced only when it changes, so objects stay fresh between runs.
if cmp -s "$OUT/include/config.h.new" "$OUT/include/config.h"; then
	rm -f "$OUT/include/config.h.new"
else
	mv "$OUT/include/config.h.new" "$OUT/include/config.h"
fi
CFLAGS_F=(-g -O1 -std=c11 -D_GNU_SOURCE -I"$REPO/include" -I"$OUT/include"
	"-fsanitize=address,undefined" -fno-sanitize-recover=undefined -fno-omit-frame-pointer
	-DCKPTFS_LAYOUT_DIR="\"$REPO/layouts\"" -DCKPTFS_SRC_LAYOUT_DIR="\"$REPO/layouts\""
	-DFUZZ_LAYOUT_DIR="\"$REPO/layouts\"")
LIBS=(-lcjson -lzstd -lm -lpthread)

srcs=()
for f in "$REPO"/src/*/*.c; do
	case $(basename "$f") in main.c | main_nofuse.c | fuse_ops.c) continue ;; esac
	srcs+=("$f")
done
echo "run.sh: building ${#srcs[@]} library sources and the harnesses into $OUT"
# The library is instrumented for coverage without libFuzzer's main; the harness link adds it.
# An object is rebuilt when its source or any header is newer.
newest_h="$OUT/include/config.h"
for f in "$REPO"/include/ckptfs/*.h; do [ "$f" -nt "$newest_h" ] && newest_h=$f; done
running=0
for f in "${srcs[@]}"; do
	o="$OUT/obj/$(basename "$f" .c).o"
	[ "$o" -nt "$f" ] && [ "$o" -nt "$newest_h" ] && continue
	rm -f "$o"
	"$CC" "${CFLAGS_F[@]}" -fsanitize=fuzzer-no-link -c "$f" -o "$o" &
	running=$((running + 1))
	[ $running -ge "$JOBS" ] && { wait -n; running=$((running - 1)); }
done
wait
for f in "${srcs[@]}"; do
	[ -f "$OUT/obj/$(basename "$f" .c).o" ] || { echo "run.sh: compiling $f failed" >&2; exit 2; }
done
objs=()
for f in "${srcs[@]}"; do objs+=("$OUT/obj/$(basename "$f" .c).o"); done
build_failed=0
for h in $HARNESSES; do
	[ -f "$HERE/fuzz_$h.c" ] || { echo "run.sh: no harness tests/fuzz/fuzz_$h.c" >&2; exit 2; }
	"$CC" "${CFLAGS_F[@]}" -fsanitize=fuzzer -I"$HERE" "$HERE/fuzz_$h.c" "${objs[@]}" "${LIBS[@]}" -o "$OUT/bin/fuzz_$h" ||
		{ echo "run.sh: building fuzz_$h failed" >&2; build_failed=1; }
done
[ $build_failed = 0 ] || exit 2

# ---- seeds ----
rm -rf "$OUT/seeds"
/usr/bin/python3 "$HERE/make-seeds.py" "$OUT/seeds" >/dev/null || { echo "run.sh: make-seeds.py failed" >&2; exit 2; }

# ---- run ----
count_artifacts() {
	local n=0 f
	for f in "$1"/crash-* "$1"/leak-* "$1"/timeout-* "$1"/oom-*; do [ -e "$f" ] && n=$((n + 1)); done
	echo $n
}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$OUT/logs"
failed=0
summary=()
for h in $HARNESSES; do
	bin="$OUT/bin/fuzz_$h"
	art="$OUT/artifacts/$h"
	mkdir -p "$OUT/corpus/$h" "$art" "$OUT/tmp/$h"
	regress=()
	reg_status="-"
	if [ -d "$HERE/regress/$h" ] && [ -n "$(ls -A "$HERE/regress/$h")" ]; then
		for f in "$HERE/regress/$h"/*; do regress+=("$f"); done
		# FUZZ_VIEWS_ALL: the views harness walks every subtree, not only the input's.
		if FUZZ_VIEWS_ALL=1 TMPDIR="$OUT/tmp/$h" "$bin" -timeout=15 -rss_limit_mb=2048 "${regress[@]}" >"$OUT/logs/$h.regress.log" 2>&1; then
			reg_status="${#regress[@]} ok"
		else
			reg_status="FAILED"
			failed=1
			echo "run.sh: $h: a regression input crashes again, see $OUT/logs/$h.regress.log:"
			grep -E 'ERROR|SUMMARY|fuzz check failed|Running:' "$OUT/logs/$h.regress.log" | tail -n 6 | sed 's/^/    /'
		fi
	fi
	before=$(count_artifacts "$art")
	runs=()
	[ -n "${FUZZ_RUNS:-}" ] && runs=("-runs=$FUZZ_RUNS")
	extra_corpus=()
	[ -d "$HERE/regress/$h" ] && extra_corpus=("$HERE/regress/$h")
	echo "run.sh: fuzzing $h for ${SECS}s (log $OUT/logs/$h.log)"
	# shellcheck disable=SC2086
	TMPDIR="$OUT/tmp/$h" "$bin" -max_len="$(max_len "$h")" -max_total_time="$SECS" -timeout=30 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$art/" "${runs[@]}" ${FUZZ_ARGS:-} \
		"$OUT/corpus/$h" "$OUT/seeds/$h" "${extra_corpus[@]}" >"$OUT/logs/$h.log" 2>&1
	rc=$?
	rm -rf "${OUT:?}/tmp/$h"
	after=$(count_artifacts "$art")
	crashes=$((after - before))
	[ $rc != 0 ] && [ $crashes = 0 ] && crashes=1 # died without an artifact
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/logs/$h.log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/logs/$h.log" | tail -n 1)
	covline=$(grep -E '^#[0-9]+.*cov: ' "$OUT/logs/$h.log" | tail -n 1)
	cov=$(printf '%s' "$covline" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(printf '%s' "$covline" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(printf '%s' "$covline" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
	if [ $crashes != 0 ]; then
		failed=1
		echo "run.sh: $h: CRASH (exit $rc), artifacts in $art:"
		grep -E '^==[0-9]+==ERROR|^SUMMARY|fuzz check failed|runtime error|Test unit written' "$OUT/logs/$h.log" | head -n 6 | sed 's/^/    /'
	fi
	summary+=("$(printf '%-12s %12s %9s %7s %7s %12s %8s  %s' "$h" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$reg_status")")
done

echo
printf '%-12s %12s %9s %7s %7s %12s %8s  %s\n' harness executions exec/s cov ft corpus crashes regress
for line in "${summary[@]}"; do echo "$line"; done
if [ $failed != 0 ]; then
	echo "run.sh: FAILED (crash artifacts under $OUT/artifacts; replay one with $OUT/bin/fuzz_HARNESS FILE)"
	exit 1
fi
echo "run.sh: no crashes"
exit 0
