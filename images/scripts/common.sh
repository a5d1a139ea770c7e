#!/usr/bin/env bash
# Shared prelude of the provisioning scripts; sourced, never run on its own.
#
# Every script acts on TARGET_ROOT: "/" on a real VM (azure.pkr.hcl), a staging directory when the
# local template (local.pkr.hcl) assembles an image root. SWITCHYARD_BUILD_MODE says which:
#   vm     the script may use the package manager, systemd and root privileges;
#   local  no sudo, no network, nothing outside TARGET_ROOT; output must be deterministic, because
#          the logs are part of the image and the same inputs must give the same image digest.
set -euo pipefail
export LC_ALL=C

TARGET_ROOT="${TARGET_ROOT:-/}"
SWITCHYARD_BUILD_MODE="${SWITCHYARD_BUILD_MODE:-vm}"
case "$SWITCHYARD_BUILD_MODE" in
  vm | local) ;;
  *)
    echo "SWITCHYARD_BUILD_MODE must be 'vm' or 'local', not '$SWITCHYARD_BUILD_MODE'" >&2
    exit 2
    ;;
esac
if [ ! -d "$TARGET_ROOT" ]; then
  echo "TARGET_ROOT '$TARGET_ROOT' is not a directory" >&2
  exit 2
fi
if [ "$SWITCHYARD_BUILD_MODE" = vm ] && [ "$(id -u)" != 0 ]; then
  echo "$(basename "$0") in vm mode must run as root (the Packer template runs it with sudo)" >&2
  exit 2
fi
if [ "$SWITCHYARD_BUILD_MODE" = local ] && [ "$(cd "$TARGET_ROOT" && pwd -P)" = / ]; then
  echo "refusing to run in local mode against /: local mode acts on a staging root only" >&2
  exit 2
fi
# Paths under the target root, without a doubled slash when the root is "/".
root_path() {
  printf '%s%s\n' "${TARGET_ROOT%/}" "$1"
}

PROVISIONING_LOG_DIR="${PROVISIONING_LOG_DIR:-$(root_path /var/log/switchyard/provisioning)}"
mkdir -p "$PROVISIONING_LOG_DIR"
STEP_NAME="$(basename "$0" .sh)"
LOG_FILE="$PROVISIONING_LOG_DIR/$STEP_NAME.log"
: >"$LOG_FILE"

# Everything a step reports goes both to Packer's output and to its log in the image.
log() {
  printf '%s\n' "$*" | tee -a "$LOG_FILE"
}

# Run a command with its output in the log; keeps the command's exit status.
run() {
  log "+ $*"
  "$@" 2>&1 | tee -a "$LOG_FILE"
  return "${PIPESTATUS[0]}"
}

# json_string TEXT: TEXT as a JSON string, for the records the scripts write into the image
# (backslash and double quote escaped; the texts are names, versions, paths and the scripts' own words).
json_string() {
  local text="${1//\\/\\\\}"
  printf '"%s"' "${text//\"/\\\"}"
}

log "$STEP_NAME: mode=$SWITCHYARD_BUILD_MODE"
