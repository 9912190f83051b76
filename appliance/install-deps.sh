#!/usr/bin/env bash
# Installs what building, running and testing Berth needs on Debian, if missing.
#   appliance/install-deps.sh          build + run (librocksdb-dev; jq for the README's examples)
#   appliance/install-deps.sh --test   also the real clients the tests drive
set -euo pipefail

packages=(librocksdb-dev jq)
python_packages=()
if [ "${1:-}" = "--test" ]; then
    packages+=(skopeo umoci jq openssl curl systemd python3-pip faketime)
    python_packages=(pytest:pytest requests:requests h2:h2 oras:oras openapi_spec_validator:openapi-spec-validator schemathesis:schemathesis yaml:pyyaml)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ${#python_packages[@]} -gt 0 ]; then
    need=()
    for entry in "${python_packages[@]}"; do
        python3 -c "import ${entry%%:*}" 2>/dev/null || need+=("${entry#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        python3 -m pip install -q "${need[@]}" 2>/dev/null || python3 -m pip install -q --break-system-packages "${need[@]}"
    fi
fi
