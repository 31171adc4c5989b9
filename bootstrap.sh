#!/bin/sh
# bootstrap.sh -- prepare a fresh checkout for ./configure.
# With --install-deps it first installs the Debian 12 packages ckptfs builds and tests with (needs root).
set -eu
cd "$(dirname "$0")"

PACKAGES="build-essential autoconf automake libtool pkg-config \
libfuse3-dev fuse3 libcjson-dev libzstd-dev libcmocka-dev \
python3-numpy python3-torch attr strace libopenblas-dev"

if [ "${1:-}" = "--install-deps" ]; then
	missing=""
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "bootstrap: installing$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
fi
autoreconf -fi
