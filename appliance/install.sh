#!/usr/bin/env bash
# Installs Berth as a systemd service on a Debian VM.
#
#   sudo appliance/install.sh [path/to/berth]        # default: .build/release/berth
#   DESTDIR=/tmp/stage appliance/install.sh ...      # stage the files only
#
# Puts the binary in /usr/local/bin, the configuration in /etc/berth/berth.yaml
# (kept if present), the unit in /etc/systemd/system, creates the `berth` user
# and /var/lib/berth (0700), runs the first-boot step and enables the unit.
# With DESTDIR set, only files are written under it: no packages, users,
# first boot or systemctl; the image's systemd creates the user and the data
# directory at its first boot (sysusers.d, tmpfiles.d).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=apt.sh
source "$here/apt.sh"

binary=${1:-$here/../.build/release/berth}
dest=${DESTDIR:-}

[ -x "$binary" ] || { echo "install.sh: no executable at $binary (build with: swift build -c release --static-swift-stdlib --product berth)" >&2; exit 1; }

if [ -z "$dest" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (or set DESTDIR to stage)" >&2; exit 1; }
    # Runtime libraries only: the compression libraries RocksDB (linked into
    # the binary) was built with. Most Debian installs have all but snappy.
    missing=()
    for p in libsnappy1v5 liblz4-1 libzstd1 libbz2-1.0 zlib1g; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        # Waits for apt's locks (apt's daily timer on a fresh VM) instead of failing.
        apt_update apt-get -o DPkg::Lock::Timeout=300
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
    fi
fi

install -D -m 0755 "$binary" "$dest/usr/local/bin/berth"
install -D -m 0644 "$here/berth.service" "$dest/etc/systemd/system/berth.service"
install -D -m 0644 "$here/README.md" "$dest/usr/share/doc/berth/README.md"
# For staged images: the user and the data directory at first boot (sysusers, tmpfiles).
install -D -m 0644 "$here/berth.sysusers" "$dest/usr/lib/sysusers.d/berth.conf"
install -D -m 0644 "$here/berth.tmpfiles" "$dest/usr/lib/tmpfiles.d/berth.conf"
if [ ! -e "$dest/etc/berth/berth.yaml" ]; then
    install -D -m 0640 "$here/berth.yaml" "$dest/etc/berth/berth.yaml"
fi
install -d -m 0700 "$dest/var/lib/berth"

if [ -n "$dest" ]; then
    echo "staged under $dest"
    exit 0
fi

getent group berth >/dev/null || groupadd --system berth
getent passwd berth >/dev/null || useradd --system --gid berth --home-dir /var/lib/berth --shell /usr/sbin/nologin berth
chown berth:berth /var/lib/berth
chgrp berth /etc/berth/berth.yaml

systemd=no
command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemd=yes
# An upgrade: a running server (or one restarting after a crash) holds the store, which
# init opens; it starts again on the new binary below. Stopping a unit that is not there does nothing.
if [ "$systemd" = yes ]; then
    systemctl stop berth.service 2>/dev/null || true
fi

# First boot as the service user, from the data directory as the unit runs it (a relative
# data_dir lands there): certificate for the configured host names, bootstrap admin.
(cd /var/lib/berth && runuser -u berth -- /usr/local/bin/berth init --config /etc/berth/berth.yaml)

if [ "$systemd" = yes ]; then
    systemctl daemon-reload
    systemctl enable berth.service
    systemctl restart berth.service
    echo "berth is running: systemctl status berth"
else
    echo "systemd is not running here; start from /var/lib/berth, as root with only the capability to bind port 443:"
    echo "  cd /var/lib/berth && setpriv --reuid berth --regid berth --init-groups --inh-caps +net_bind_service \\"
    echo "    --ambient-caps +net_bind_service /usr/local/bin/berth serve --config /etc/berth/berth.yaml"
fi
echo "admin credential: /var/lib/berth/bootstrap-credentials.json (mode 0600, owner berth)"
