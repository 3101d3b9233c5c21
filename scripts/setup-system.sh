#!/usr/bin/env bash
# Installs the Debian packages paycore needs, only those missing: PostgreSQL 15 with pgTAP
# and plpgsql_check, pg_prove, and python3-venv when `python3 -m venv` cannot work (the venv
# needs the venv and ensurepip modules; Debian ships them apart from python3). Runs as root
# (or with sudo). Idempotent and quick when everything is there.
set -euo pipefail

packages=(
    postgresql-15
    postgresql-15-pgtap
    postgresql-15-plpgsql-check
    libtap-parser-sourcehandler-pgtap-perl
)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
# paycore runs its own clusters; Debian's default cluster on port 5432 is not needed.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "$(command -v python3 || echo python3) still cannot create a venv (no ensurepip/venv module):" \
        "put Debian's /usr/bin/python3 first in PATH, or install that python's venv support" >&2
    exit 1
fi
