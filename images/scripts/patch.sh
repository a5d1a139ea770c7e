#!/usr/bin/env bash
# OS patching up to the image's patch level, and a record of that level and of every package the
# step changed inside the image.
#
# Inputs: PATCH_LEVEL (YYYY.MM[.R]), BASE (e.g. debian-12); PATCH_SNAPSHOT (optional, a snapshot
# timestamp YYYYMMDDTHHMMSSZ: default the end of the month's patch date, its second Tuesday).
# vm mode: apt reads ONLY a dated snapshot of the distribution's archive (snapshot.debian.org,
#          snapshot.ubuntu.com) for the upgrade. Why a snapshot: the live mirrors change every day, so
#          two builds of one patch level a week apart would ship different packages; a snapshot is
#          frozen at one moment, so every build of the level installs the same versions and a rebuild
#          reproduces the image. The installed package list is taken before and after the upgrade;
#          what changed (package, from, to) goes to /etc/switchyard/patch-changes.json and the log.
# local mode: a staging root has no package manager. The step says so in the same file: no changes,
#          and a reason, never an invented list.
source "$(dirname "$0")/common.sh"

: "${PATCH_LEVEL:?PATCH_LEVEL (YYYY.MM or YYYY.MM.R) is required}"
: "${BASE:?BASE (e.g. debian-12) is required}"
if ! [[ "$PATCH_LEVEL" =~ ^([0-9]{4})\.(0[1-9]|1[0-2])(\.[1-9][0-9]?)?$ ]]; then
  echo "PATCH_LEVEL '$PATCH_LEVEL' is not YYYY.MM or YYYY.MM.R" >&2
  exit 2
fi
year="${BASH_REMATCH[1]}"
month="${BASH_REMATCH[2]}"

# The month's patch date: its second Tuesday (Patch Tuesday; the monthly rebuild runs after it).
patch_date() {
  local first_weekday offset
  first_weekday="$(date -u -d "$year-$month-01" +%u)" # 1 = Monday ... 7 = Sunday
  offset=$(((2 - first_weekday + 7) % 7))
  printf '%s%s%02d' "$year" "$month" $((1 + offset + 7))
}
PATCH_SNAPSHOT="${PATCH_SNAPSHOT:-$(patch_date)T235959Z}"
if ! [[ "$PATCH_SNAPSHOT" =~ ^[0-9]{8}T[0-9]{6}Z$ ]]; then
  echo "PATCH_SNAPSHOT '$PATCH_SNAPSHOT' is not a snapshot timestamp YYYYMMDDTHHMMSSZ" >&2
  exit 2
fi

record_dir="$(root_path /etc/switchyard)"
mkdir -p "$record_dir"
changes_file="$record_dir/patch-changes.json"


if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  case "$BASE" in
    debian-12)
      archive="https://snapshot.debian.org/archive/debian/$PATCH_SNAPSHOT"
      security="https://snapshot.debian.org/archive/debian-security/$PATCH_SNAPSHOT"
      sources="deb [check-valid-until=no] $archive bookworm main
deb [check-valid-until=no] $archive bookworm-updates main
deb [check-valid-until=no] $security bookworm-security main"
      ;;
    ubuntu-22.04 | ubuntu-24.04)
      codename=jammy
      [ "$BASE" = ubuntu-24.04 ] && codename=noble
      archive="https://snapshot.ubuntu.com/ubuntu/$PATCH_SNAPSHOT"
      sources="deb [check-valid-until=no] $archive $codename main restricted universe
deb [check-valid-until=no] $archive $codename-updates main restricted universe
deb [check-valid-until=no] $archive $codename-security main restricted universe"
      ;;
    *)
      echo "no package snapshot is known for base '$BASE': add it to patch.sh" >&2
      exit 2
      ;;
  esac
  snapshot_list="$record_dir/apt-snapshot.list"
  printf '%s\n' "$sources" >"$snapshot_list"
  log "patching from the snapshot $PATCH_SNAPSHOT only:"
  sed 's/^/  /' "$snapshot_list" | tee -a "$LOG_FILE"
  # Only the snapshot's list, no sources.list.d: a live mirror must not slip newer packages in.
  apt_snapshot=(-o "Dir::Etc::SourceList=$snapshot_list" -o "Dir::Etc::SourceParts=-")
  export DEBIAN_FRONTEND=noninteractive
  before="$(mktemp)"
  after="$(mktemp)"
  dpkg-query -W -f='${Package} ${Version}\n' | sort >"$before"
  run apt-get "${apt_snapshot[@]}" update
  run apt-get "${apt_snapshot[@]}" -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
  run apt-get "${apt_snapshot[@]}" -y autoremove --purge
  dpkg-query -W -f='${Package} ${Version}\n' | sort >"$after"
  log "installed packages:"
  tee -a "$LOG_FILE" <"$after" >/dev/null
  # package, before, after for every package whose version differs; "-" where it came or went.
  changes="$(join -a 1 -a 2 -e - -o 0,1.2,2.2 "$before" "$after" | awk '$2 != $3')"
  rm -f "$before" "$after"
  {
    printf '{"patch_level": %s, "snapshot": %s, "changes": [' "$(json_string "$PATCH_LEVEL")" "$(json_string "$PATCH_SNAPSHOT")"
    separator=""
    while read -r package from to; do
      [ -n "$package" ] || continue
      printf '%s\n  {"package": %s, "from": %s, "to": %s}' "$separator" \
        "$(json_string "$package")" "$(json_string "${from#-}")" "$(json_string "${to#-}")"
      separator=","
    done <<<"$changes"
    printf '\n], "reason": ""}\n'
  } >"$changes_file"
  log "CHANGED $(printf '%s' "$changes" | grep -c . || true) package(s), recorded in /etc/switchyard/patch-changes.json"
  printf '%s\n' "$changes" | sed '/^$/d; s/^/  /' | tee -a "$LOG_FILE"
else
  log "local mode: no package manager on a staging root; nothing was upgraded (recorded as no changes)"
  printf '{"patch_level": %s, "snapshot": "", "changes": [], "reason": %s}\n' "$(json_string "$PATCH_LEVEL")" \
    "$(json_string "local build: the staging root has no package manager, so nothing was upgraded")" >"$changes_file"
fi

printf 'PATCH_LEVEL=%s\nBASE=%s\n' "$PATCH_LEVEL" "$BASE" >"$record_dir/patch-level"
log "patch level $PATCH_LEVEL of base $BASE recorded in /etc/switchyard/patch-level"
