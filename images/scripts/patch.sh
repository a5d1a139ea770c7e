#!/usr/bin/env bash
# OS patching up to the image's patch level, and a record of that level inside the image.
#
# Inputs: PATCH_LEVEL (YYYY.MM[.R]), BASE (e.g. debian-12).
# vm mode: apt-get upgrade of every package (non-interactive, keeping existing config files), then the
#          installed package list goes into the log, so the image says exactly what it ships.
# local mode: a staging root has no package manager; the step records the patch level only.
source "$(dirname "$0")/common.sh"

: "${PATCH_LEVEL:?PATCH_LEVEL (YYYY.MM or YYYY.MM.R) is required}"
: "${BASE:?BASE (e.g. debian-12) is required}"
if ! [[ "$PATCH_LEVEL" =~ ^[0-9]{4}\.(0[1-9]|1[0-2])(\.[1-9][0-9]?)?$ ]]; then
  echo "PATCH_LEVEL '$PATCH_LEVEL' is not YYYY.MM or YYYY.MM.R" >&2
  exit 2
fi

if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update
  run apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
  run apt-get -y autoremove --purge
  log "installed packages:"
  dpkg-query -W -f='${Package} ${Version}\n' | sort | tee -a "$LOG_FILE" >/dev/null
else
  log "local mode: no package manager on a staging root; recording the patch level only"
fi

record_dir="$(root_path /etc/switchyard)"
mkdir -p "$record_dir"
printf 'PATCH_LEVEL=%s\nBASE=%s\n' "$PATCH_LEVEL" "$BASE" >"$record_dir/patch-level"
log "patch level $PATCH_LEVEL of base $BASE recorded in /etc/switchyard/patch-level"
