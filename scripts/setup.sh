#!/usr/bin/env bash
# Idempotent set-up for a bare Debian 12 or 13 machine (root, package mirrors only).
#
# Installs Mosquitto, PostgreSQL and TimescaleDB (Apache edition), then creates .venv with the
# project and its dev extras at the versions of constraints.txt. Every step first checks whether
# its result is already there, so a second run finishes in seconds and changes nothing.
#
#   Debian 13: the distribution's postgresql-17-timescaledb.
#   Debian 12: Debian 13's timescaledb source package, fetched through a private apt
#              configuration (the system's sources stay untouched) and built against
#              postgresql-server-dev-15 (see docs/architecture.md, "Installing the servers
#              without Docker").
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

log() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}

# The first Debian mirror the system already uses (deb822 "URIs:" or one-line "deb").
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -E '^[[:space:]]*(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' \
    | grep -v security | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

# A private apt configuration under $1 with the sources given after it: packages the system's
# own sources do not carry are fetched through it, and the system's sources stay untouched.
private_apt() {
    local dir=$1
    shift
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/apt/parts"
    printf '%s\n' "$@" > "$dir/apt/sources.list"
    cat > "$dir/apt/apt.conf" <<CONF
Dir::Etc::SourceList "$dir/apt/sources.list";
Dir::Etc::SourceParts "$dir/apt/parts";
Dir::State::Lists "$dir/apt/lists";
Dir::Cache::Archives "$dir/apt/archives";
APT::Sandbox::User "root";
CONF
}

mosquitto_version() {
    dpkg-query -W -f='${Version}' mosquitto 2>/dev/null | sed 's/^[0-9]*://; s/-.*//'
}

# --- Mosquitto --------------------------------------------------------------------------------
apt_install mosquitto mosquitto-clients
# Mosquitto before 2.0.13 overruns a client's Receive Maximum: once the client acknowledges one
# message while others are queued for it, the broker sends the whole queue (eclipse-mosquitto
# #2306, fixed in 2.0.13). The analyzer must then read through the backlog to reach the PUBACKs
# of its results, holding every frame meanwhile (docs/operations.md, "Broker version"). Debian 12
# ships 2.0.11; its backports carry 2.0.21, as Debian 13 does.
if [ "$codename" = "bookworm" ] \
    && dpkg --compare-versions "$(mosquitto_version)" lt 2.0.13; then
    bp=$(mktemp -d /tmp/sqal-mosquitto.XXXXXX)
    private_apt "$bp" \
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" \
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main"
    log "installing Mosquitto from bookworm-backports (Debian 12's $(mosquitto_version) overruns Receive Maximum)"
    if (APT_CONFIG="$bp/apt/apt.conf" apt-get update -qq \
        && as_root env APT_CONFIG="$bp/apt/apt.conf" DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends -t bookworm-backports \
            mosquitto mosquitto-clients libmosquitto1 >/dev/null); then
        :
    else
        log "warning: bookworm-backports unreachable; keeping Mosquitto $(mosquitto_version)"
    fi
    rm -rf "$bp"
fi
# pdftotext/pdftoppm: the shift report's tests read the PDF back.
apt_install poppler-utils
# WeasyPrint lays the shift report out with Pango; DejaVu is the report's font.
apt_install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
# The station's browser tests drive Debian's headless Chromium (Playwright, executable_path).
apt_install chromium
# The Debian package enables a system-wide broker on 1883; SQAL runs its own under .sqal/.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled mosquitto >/dev/null 2>&1; then
    as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

# --- PostgreSQL + TimescaleDB -----------------------------------------------------------------
if [ "$codename" = "bookworm" ]; then
    pg_major=15
else
    pg_major=17
fi
pg_bin=/usr/lib/postgresql/$pg_major/bin
apt_install "postgresql-$pg_major" "postgresql-client-$pg_major"

if [ -f "/usr/share/postgresql/$pg_major/extension/timescaledb.control" ]; then
    :
elif [ "$pg_major" = "17" ]; then
    apt_install postgresql-17-timescaledb
else
    apt_install "postgresql-server-dev-$pg_major" cmake gcc make libssl-dev dpkg-dev xz-utils
    build=$(mktemp -d /tmp/sqal-tsdb.XXXXXX)
    trap 'rm -rf "$build"' EXIT
    private_apt "$build" \
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main"
    log "fetching the timescaledb source package from $mirror (trixie)"
    (cd "$build" && APT_CONFIG="$build/apt/apt.conf" apt-get update -qq \
        && APT_CONFIG="$build/apt/apt.conf" apt-get source --download-only -qq timescaledb \
        >/dev/null)
    orig=$(ls "$build"/timescaledb_*.orig.tar.* | head -n 1)
    mkdir -p "$build/src"
    tar -xf "$orig" -C "$build/src" --strip-components=1
    log "building timescaledb $(basename "$orig") against PostgreSQL $pg_major (Apache edition)"
    (cd "$build/src" \
        && ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
            -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="$pg_bin/pg_config" >/dev/null \
        && as_root make -C build -j"$(nproc)" install >/dev/null)
fi

# --- Python -----------------------------------------------------------------------------------
stamp=.venv/.sqal-installed
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    log "installing the project and its dev extras into .venv (versions of constraints.txt)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    # A new top-level package is listed in pyproject.toml, whose change re-runs this install;
    # constraints.txt pins every package to the version the tests passed with (make constraints).
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
    touch "$stamp"
fi
pg_version=$("$pg_bin/postgres" --version | awk '{print $3}')
mq_version=$( (mosquitto -h 2>/dev/null || true) | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -n 1)
log "ready: PostgreSQL $pg_version with TimescaleDB, Mosquitto $mq_version, .venv"
