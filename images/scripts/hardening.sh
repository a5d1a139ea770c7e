#!/usr/bin/env bash
# Baseline hardening, with a machine-readable result for every control.
#
# Both modes write the hardening configuration into TARGET_ROOT (kernel network settings, SSH daemon
# policy) and fix file permissions under it (no group/world-writable files, no setuid/setgid bits
# outside the system's own binaries). vm mode also applies the settings to the running system.
#
# Every control ends as one JSON line in /etc/switchyard/compliance.jsonl (id, title, result, detail;
# result: pass = met as built, fixed = this script made it so, fail = not met) and a CONTROL line in
# the provisioning log. The scan gate (switchyard.core.scan_policy) fails an image with a failed
# required control, as it fails one with a critical advisory; a missing file fails it too.
# What the script does not own it checks but never edits: an SSH setting another package's drop-in
# decides (cloud-init's 50-cloud-init.conf) is reported failed, for its owner to fix.
source "$(dirname "$0")/common.sh"

compliance_file="$(root_path /etc/switchyard/compliance.jsonl)"
mkdir -p "$(dirname "$compliance_file")"
: >"$compliance_file"


# control ID RESULT TITLE DETAIL: record one control's result in the image and the log.
control() {
  printf '{"id": %s, "title": %s, "result": %s, "detail": %s}\n' "$(json_string "$1")" "$(json_string "$3")" \
    "$(json_string "$2")" "$(json_string "$4")" >>"$compliance_file"
  log "CONTROL $1 $2: $3 ($4)"
}

write_file() {
  # write_file PATH MODE: content on stdin; PATH is under the target root.
  local path
  path="$(root_path "$1")"
  mkdir -p "$(dirname "$path")"
  cat >"$path"
  chmod "$2" "$path"
  log "WROTE $1 (mode $2)"
}

write_file /etc/sysctl.d/60-switchyard-hardening.conf 0644 <<'CONF'
# switchyard baseline: no ICMP redirects or source routing, log martians, SYN cookies on.
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.all.log_martians = 1
net.ipv4.tcp_syncookies = 1
net.ipv6.conf.all.accept_redirects = 0
kernel.kptr_restrict = 2
kernel.dmesg_restrict = 1
fs.protected_symlinks = 1
fs.protected_hardlinks = 1
CONF

write_file /etc/ssh/sshd_config.d/60-switchyard-hardening.conf 0644 <<'CONF'
# switchyard baseline: keys only, no root login, short grace time.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
MaxAuthTries 3
LoginGraceTime 30
CONF

write_file /etc/modprobe.d/60-switchyard-hardening.conf 0644 <<'CONF'
# switchyard baseline: filesystems a service VM never mounts.
install cramfs /bin/false
install freevxfs /bin/false
install hfs /bin/false
install hfsplus /bin/false
install udf /bin/false
CONF
control SWY-SYSCTL-1 pass "Kernel network hardening (no redirects or source routing, SYN cookies)" \
  "set in /etc/sysctl.d/60-switchyard-hardening.conf"
control SWY-MOD-1 pass "Filesystem modules a service VM never mounts are disabled" \
  "set in /etc/modprobe.d/60-switchyard-hardening.conf"

# The SSH setting sshd will really use. sshd keeps the FIRST value it reads, and Debian's and Ubuntu's
# sshd_config include sshd_config.d/*.conf (in name order) before their own lines: a 50-*.conf that
# says "PasswordAuthentication yes" (cloud-init writes one for `ssh_pwauth: true`) beats switchyard's
# 60- drop-in. On a VM `sshd -T` answers; on a staging root the files are read in sshd's order.
sshd_effective() {
  local keyword="$1" value=""
  if [ "$SWITCHYARD_BUILD_MODE" = vm ] && command -v sshd >/dev/null 2>&1; then
    value="$(sshd -T 2>/dev/null | awk -v k="$keyword" 'tolower($1) == k { print $2; exit }')"
  else
    local files=()
    local drop_in
    for drop_in in "$(root_path /etc/ssh/sshd_config.d)"/*.conf; do
      [ -f "$drop_in" ] && files+=("$drop_in")
    done
    [ -f "$(root_path /etc/ssh/sshd_config)" ] && files+=("$(root_path /etc/ssh/sshd_config)")
    if [ "${#files[@]}" -gt 0 ]; then
      value="$(awk -v k="$keyword" 'tolower($1) == k { print tolower($2); exit }' "${files[@]}")"
    fi
  fi
  printf '%s' "${value:-unset}"
}
# Which file sets a keyword first (for the detail of a failed control).
sshd_source() {
  local keyword="$1" drop_in
  for drop_in in "$(root_path /etc/ssh/sshd_config.d)"/*.conf "$(root_path /etc/ssh/sshd_config)"; do
    [ -f "$drop_in" ] || continue
    if awk -v k="$keyword" 'tolower($1) == k { found = 1; exit } END { exit !found }' "$drop_in"; then
      printf '/%s' "${drop_in#"${TARGET_ROOT%/}"/}"
      return
    fi
  done
}
ssh_control() {
  local id="$1" title="$2" keyword="$3" wanted="$4" value
  value="$(sshd_effective "$keyword")"
  if [ "$value" = "$wanted" ]; then
    control "$id" pass "$title" "sshd uses $keyword $value"
  else
    control "$id" fail "$title" "sshd uses $keyword $value, set by $(sshd_source "$keyword"); switchyard's drop-in comes later and loses"
  fi
}
ssh_control SWY-SSH-1 "SSH root login is disabled" permitrootlogin no
ssh_control SWY-SSH-2 "SSH password authentication is disabled" passwordauthentication no

# File permissions. On a VM the scan covers the service's own tree and /etc; on a staging root, all of it.
if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  scan_roots=("$(root_path /etc)" "$(root_path /opt/switchyard)")
else
  scan_roots=("$TARGET_ROOT")
fi
writable_fixed=0
privileged_fixed=0
for scan_root in "${scan_roots[@]}"; do
  [ -d "$scan_root" ] || continue
  relative_root="/${scan_root#"${TARGET_ROOT%/}"}"
  relative_root="/${relative_root#/}"
  writable="$(find "$scan_root" -xdev \( -type f -o -type d \) -perm /022 ! -type l -print | sort)"
  if [ -n "$writable" ]; then
    count="$(printf '%s\n' "$writable" | wc -l)"
    printf '%s\n' "$writable" | xargs -d '\n' chmod go-w
    writable_fixed=$((writable_fixed + count))
    log "FIXED group/world-writable entries under $relative_root: $count"
  else
    log "PASS no group/world-writable entries under $relative_root"
  fi
  privileged="$(find "$scan_root" -xdev -type f -perm /6000 -print | sort)"
  if [ -n "$privileged" ]; then
    count="$(printf '%s\n' "$privileged" | wc -l)"
    printf '%s\n' "$privileged" | xargs -d '\n' chmod ug-s
    privileged_fixed=$((privileged_fixed + count))
    log "FIXED setuid/setgid files under $relative_root: $count"
  else
    log "PASS no setuid/setgid files under $relative_root"
  fi
done
if [ "$writable_fixed" -gt 0 ]; then
  control SWY-FS-1 fixed "No group- or world-writable files" "write bits removed from $writable_fixed entries"
else
  control SWY-FS-1 pass "No group- or world-writable files" "none found"
fi
if [ "$privileged_fixed" -gt 0 ]; then
  control SWY-FS-2 fixed "No setuid/setgid files outside the system's own" "bits removed from $privileged_fixed files"
else
  control SWY-FS-2 pass "No setuid/setgid files outside the system's own" "none found"
fi

if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  run sysctl --system
  if command -v sshd >/dev/null 2>&1; then
    run sshd -t
  fi
else
  log "local mode: settings written into the image root; nothing applied to this machine"
fi
log "compliance results: /etc/switchyard/compliance.jsonl ($(wc -l <"$compliance_file") controls)"
log "hardening done"
