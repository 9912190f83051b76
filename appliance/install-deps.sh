#!/usr/bin/env bash
# Installs what building, running and testing Berth needs on Debian, if missing.
#   appliance/install-deps.sh          build + run (librocksdb-dev; jq for the README's examples)
#   appliance/install-deps.sh --test   also the real clients the tests drive
set -euo pipefail
# shellcheck source=apt.sh
source "$(dirname "$0")/apt.sh"

packages=(librocksdb-dev jq)
# Installed without their recommends (docker.io's pull in git, apparmor and needrestart).
bare_packages=()
python_packages=()
if [ "${1:-}" = "--test" ]; then
    packages+=(skopeo podman umoci openssl curl systemd python3-pip faketime)
    bare_packages+=(docker.io)
    # Installed, when a module is missing, at the versions the tests were last run
    # with: the contract test drives schemathesis' command line and the ORAS test
    # its Python API. One already installed is kept as it is.
    python_packages=(pytest:pytest==9.0.3 requests:requests==2.34.2 h2:h2==4.4.1 oras:oras==0.2.43
        openapi_spec_validator:openapi-spec-validator==0.9.0 schemathesis:schemathesis==4.32.5 yaml:pyyaml==6.0.3)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
missing_bare=()
for p in "${bare_packages[@]}"; do installed "$p" || missing_bare+=("$p"); done
if [ $((${#missing[@]} + ${#missing_bare[@]})) -gt 0 ]; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-deps: run as root, or install sudo, to install: ${missing[*]} ${missing_bare[*]}" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    # A fresh VM's first minutes often have apt's daily timer or
    # unattended-upgrades holding dpkg's lock: wait for it instead of failing.
    apt_get=(apt-get -o DPkg::Lock::Timeout=300)
    apt_update "${sudo_cmd[@]}" "${apt_get[@]}"
    # Through env: sudo drops the caller's environment.
    if [ ${#missing[@]} -gt 0 ]; then
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ${#missing_bare[@]} -gt 0 ]; then
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends \
            "${missing_bare[@]}" >/dev/null
    fi
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
