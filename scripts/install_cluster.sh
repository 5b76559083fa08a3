#!/usr/bin/env bash
# What the cluster tests need beyond `make setup` (tests/test_cluster.py: a single-node
# SLURM and a throwaway PostgreSQL from Debian packages; the Snakemake SLURM executor plugin and
# psycopg2 in .venv). Idempotent and quiet: a second call installs nothing.
#   bash scripts/install_cluster.sh   # after `make setup` (needs .venv); `make test` calls it
set -euo pipefail
# runuser, initdb's wrappers, slurmctld and munged live in sbin, which a non-root shell's PATH
# (or a clean `env -i` one) may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."

PKGS=(slurm-wlm munge postgresql)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
            echo "install_cluster.sh: need root (or passwordless sudo) to apt-get install ${missing[*]}" >&2; exit 1
        fi
    fi
    echo "install_cluster.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq >/dev/null
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.cluster-installed
if [[ ! -f $stamp || requirements-cluster.txt -nt $stamp ]]; then
    .venv/bin/pip install -q -r requirements-cluster.txt
    touch "$stamp"
fi
