#!/usr/bin/env bash
# Baseline hardening, with a report of every check in the image's provisioning log.
#
# Both modes write the hardening configuration into TARGET_ROOT (kernel network settings, SSH daemon
# policy) and fix file permissions under it (no group/world-writable files, no setuid/setgid bits
# outside the system's own binaries). vm mode also applies the settings to the running system.
source "$(dirname "$0")/common.sh"

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

# File permissions. On a VM the scan covers the service's own tree and /etc; on a staging root, all of it.
if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  scan_roots=("$(root_path /etc)" "$(root_path /opt/switchyard)")
else
  scan_roots=("$TARGET_ROOT")
fi
for scan_root in "${scan_roots[@]}"; do
  [ -d "$scan_root" ] || continue
  relative_root="/${scan_root#"${TARGET_ROOT%/}"}"
  relative_root="/${relative_root#/}"
  writable="$(find "$scan_root" -xdev \( -type f -o -type d \) -perm /022 ! -type l -print | sort)"
  if [ -n "$writable" ]; then
    count="$(printf '%s\n' "$writable" | wc -l)"
    printf '%s\n' "$writable" | xargs -d '\n' chmod go-w
    log "FIXED group/world-writable entries under $relative_root: $count"
  else
    log "PASS no group/world-writable entries under $relative_root"
  fi
  privileged="$(find "$scan_root" -xdev -type f -perm /6000 -print | sort)"
  if [ -n "$privileged" ]; then
    count="$(printf '%s\n' "$privileged" | wc -l)"
    printf '%s\n' "$privileged" | xargs -d '\n' chmod ug-s
    log "FIXED setuid/setgid files under $relative_root: $count"
  else
    log "PASS no setuid/setgid files under $relative_root"
  fi
done

if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  run sysctl --system
  if command -v sshd >/dev/null 2>&1; then
    run sshd -t
  fi
else
  log "local mode: settings written into the image root; nothing applied to this machine"
fi
log "hardening done"
