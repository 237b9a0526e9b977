#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH (module 5 runs a real Prometheus on 127.0.0.1).
# Installs Debian's `prometheus` package when missing and we are root; otherwise says how.
# The package's service is never started here: the course starts its own server on loopback.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's prometheus package (prometheus + promtool) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    exit 0
fi
echo "error: prometheus/promtool not found. Install them, e.g. 'sudo apt-get install prometheus'" >&2
echo "       or download a release from prometheus.io and put both binaries on PATH." >&2
exit 1
