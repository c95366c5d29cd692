#!/usr/bin/env bash
# Make this machine ready for the demo and the tests: Debian packages, a running Docker daemon,
# and the project's virtualenv. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker:docker.io dockerd:docker.io mmdebstrap:mmdebstrap iptables:iptables \
            ssh:openssh-client ssh-keygen:openssh-client; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages (${need[*]}); run this as root or install them" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/pipfeed-lab"
    log="${XDG_CACHE_HOME:-$HOME/.cache}/pipfeed-lab/dockerd.log"
    echo "setup: starting dockerd (log: $log)"
    setsid dockerd >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see $log" >&2; exit 1; }
fi

# The venv is rebuilt when the pinned requirements change. pip here reads no machine-wide
# config, so the controller behaves the same on every machine.
stamp=$(cat requirements/*.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.requirements 2>/dev/null)" != "$stamp" ]; then
    echo "setup: creating .venv from requirements/test.txt"
    rm -rf .venv
    python3 -m venv .venv
    PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --quiet --disable-pip-version-check \
        --requirement requirements/test.txt
    echo "$stamp" > .venv/.requirements
fi
