# Sourced by the installers: what they share about apt.

# `apt-get update` takes apt's lists lock without waiting (DPkg::Lock::Timeout
# covers dpkg's lock only), and a fresh VM's first minutes often have apt's
# daily timer holding it: retried for up to 5 minutes while another apt holds it.
#   apt_update [sudo] apt-get [options...]
apt_update() {
    local output
    for _ in $(seq 60); do
        if output=$("$@" update -qq 2>&1); then return 0; fi
        grep -q "Could not get lock" <<<"$output" || break
        sleep 5
    done
    printf '%s\n' "$output" >&2
    return 1
}
