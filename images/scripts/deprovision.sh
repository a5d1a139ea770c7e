#!/usr/bin/env bash
# Last step: remove what must not be baked into an image, then generalize the VM.
#
# Both modes prune caches and temporary files under TARGET_ROOT (Python bytecode caches, editor and
# OS droppings, tmp directories). vm mode then cleans apt and cloud-init state and runs
# `waagent -deprovision+user`, which deletes the build user, SSH host keys and machine identity so
# Azure can generalize the image. Nothing may run after it.
source "$(dirname "$0")/common.sh"

# prune DIR DESCRIPTION FIND-TESTS...: delete what matches under DIR, and say how much.
prune() {
  local directory="$1" description="$2"
  shift 2
  [ -d "$directory" ] || return 0
  local found
  found="$(find "$directory" -xdev \( "$@" \) -prune -print | sort)"
  if [ -n "$found" ]; then
    log "PRUNED $description: $(printf '%s\n' "$found" | wc -l)"
    printf '%s\n' "$found" | xargs -d '\n' rm -rf
  else
    log "CLEAN no $description"
  fi
}

if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  run apt-get -y clean
  rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/* /tmp/switchyard-scripts /tmp/switchyard-app
  if command -v cloud-init >/dev/null 2>&1; then
    run cloud-init clean --logs
  fi
  prune /opt/switchyard "Python bytecode caches" -type d -name __pycache__
  log "generalizing with waagent -deprovision+user"
  run /usr/sbin/waagent -force -deprovision+user
  export HISTSIZE=0
  sync
else
  prune "$TARGET_ROOT" "Python bytecode caches" -type d -name __pycache__
  prune "$TARGET_ROOT" "compiled Python files" -type f -name '*.py[co]'
  prune "$TARGET_ROOT" "editor and OS droppings" -type f \( -name '*.swp' -o -name '*~' -o -name .DS_Store \)
  prune "$TARGET_ROOT" "test and tool caches" -type d \( -name .pytest_cache -o -name .mypy_cache -o -name .ruff_cache \)
  rm -rf "$(root_path /tmp)" "$(root_path /var/tmp)"
  log "local mode: no VM to generalize"
fi
log "deprovision done"
