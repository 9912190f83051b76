#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and runs Berth on embedded
# defaults (data in ./berth-data, HTTP on 127.0.0.1:5000, TLS + HTTP/2 on
# 127.0.0.1:5443 with a self-signed certificate generated at first start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash appliance/install-deps.sh
swift build --product berth
exec .build/debug/berth serve "$@"
