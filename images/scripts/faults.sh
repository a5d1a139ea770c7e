#!/usr/bin/env bash
# Build-time faults, on purpose: what the image recipe's fault profile asks for that must be baked
# into the image before hardening looks at it (the runtime faults, errors and latency, are the
# app's, read from manifest.json). For demos and the end-to-end tests of the gates.
#
# Input: FAULT_PROFILE (the fault profile as JSON; default none).
#   ssh_password_auth: true  writes /etc/ssh/sshd_config.d/50-cloud-init.conf with
#     "PasswordAuthentication yes", exactly what cloud-init writes for `ssh_pwauth: true` (a user-data
#     setting operators meet in real fleets). sshd reads that file before switchyard's 60- drop-in
#     and keeps the first value, so password login stays on: hardening's control SWY-SSH-2 reports it
#     failed (it does not edit cloud-init's file) and the scan gate stops the image.
source "$(dirname "$0")/common.sh"

FAULT_PROFILE="${FAULT_PROFILE:-{\}}"
if printf '%s' "$FAULT_PROFILE" | grep -Eq '"ssh_password_auth"[[:space:]]*:[[:space:]]*true'; then
  drop_in="$(root_path /etc/ssh/sshd_config.d/50-cloud-init.conf)"
  mkdir -p "$(dirname "$drop_in")"
  printf 'PasswordAuthentication yes\n' >"$drop_in"
  chmod 0644 "$drop_in"
  log "FAULT ssh_password_auth: wrote /etc/ssh/sshd_config.d/50-cloud-init.conf (PasswordAuthentication yes)"
else
  log "no build-time faults"
fi
