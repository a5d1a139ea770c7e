#!/usr/bin/env bash
# The scan inputs of an Azure build: the image's own files, laid out like the local artifact, in one
# tar.gz that azure.pkr.hcl downloads before the VM is generalized. switchyard scans and gates them
# (build -> scan -> gate -> publish): nothing reaches the gallery unless they pass.
#
# Layout (what switchyard.images.scan reads from a local artifact too):
#   manifest.json                       the image manifest (INSTALL_ROOT/manifest.json)
#   app/                                the installed app, with its requirements.txt lock (OSV)
#   venv/                               the app's installed dependencies (Trivy's Python packages)
#   etc/os-release, var/lib/dpkg/status the OS and its packages (Trivy's OS vulnerabilities)
#   etc/switchyard/                     patch level, compliance.jsonl, patch-changes.json
#   etc/ssh/, etc/sysctl.d/, etc/modprobe.d/  the hardened configuration (misconfigurations, secrets)
#   provisioning/                       every provisioning step's log
# Inputs: INSTALL_ROOT (/opt/switchyard/<service>), SCAN_INPUTS (the tar.gz to write). vm mode only.
source "$(dirname "$0")/common.sh"

: "${INSTALL_ROOT:?INSTALL_ROOT (/opt/switchyard/<service>) is required}"
: "${SCAN_INPUTS:?SCAN_INPUTS (the tar.gz to write) is required}"
if [ "$SWITCHYARD_BUILD_MODE" != vm ]; then
  echo "scan-inputs.sh runs on a build VM only: a local artifact is its own scan input" >&2
  exit 2
fi
if [ ! -f "$INSTALL_ROOT/manifest.json" ]; then
  echo "no image manifest at $INSTALL_ROOT/manifest.json: install-app.sh must run first" >&2
  exit 2
fi

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
root="$staging/root"
mkdir -p "$root/etc" "$root/var/lib/dpkg"
cp -a "$INSTALL_ROOT/manifest.json" "$root/manifest.json"
cp -a "$INSTALL_ROOT/app" "$root/app"
[ -d "$INSTALL_ROOT/venv" ] && cp -a "$INSTALL_ROOT/venv" "$root/venv"
cp -aL /etc/os-release "$root/etc/os-release"
cp -a /var/lib/dpkg/status "$root/var/lib/dpkg/status"
for dir in /etc/switchyard /etc/ssh /etc/sysctl.d /etc/modprobe.d; do
  [ -d "$dir" ] && cp -a "$dir" "$root$dir"
done
# Host keys are the build VM's own and deprovisioning removes them: never let them look like a leak.
rm -f "$root"/etc/ssh/ssh_host_*
cp -a "$PROVISIONING_LOG_DIR" "$root/provisioning"

tar -C "$root" --owner=0 --group=0 --numeric-owner -czf "$SCAN_INPUTS" .
chmod 0644 "$SCAN_INPUTS"
log "scan inputs: $(du -h "$SCAN_INPUTS" | cut -f1) in $SCAN_INPUTS"
