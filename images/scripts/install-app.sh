#!/usr/bin/env bash
# Install the service's files and its dependency lock, then lock the installed files read-only.
#
# Inputs: APP_SOURCE (a directory holding the app: code + requirements.txt), APP_INSTALL_DIR (where it
# goes; on a VM /opt/switchyard/<service>/app, in local mode <root>/app), SERVICE.
# The lock must pin every dependency (name==version): scanners read it, and an unpinned dependency
# would make the image say something other than what it runs.
# vm mode also installs the pinned dependencies into a virtualenv next to the app (hashes when given),
# creates a system user for the service and a systemd unit that starts it at boot (SERVICE_ENTRYPOINT,
# SERVICE_PORT, INSTALL_ROOT holding manifest.json).
source "$(dirname "$0")/common.sh"

: "${APP_SOURCE:?APP_SOURCE (the app directory to install) is required}"
: "${APP_INSTALL_DIR:?APP_INSTALL_DIR (where to install the app) is required}"
: "${SERVICE:?SERVICE (the service name) is required}"

if [ ! -d "$APP_SOURCE" ]; then
  echo "APP_SOURCE '$APP_SOURCE' is not a directory" >&2
  exit 2
fi
lock="$APP_SOURCE/requirements.txt"
if [ ! -f "$lock" ]; then
  echo "the app has no requirements.txt lock at $lock (it may hold only comments)" >&2
  exit 2
fi
# Every requirement (comments, line continuations and --hash options removed) must be name==version.
requirements="$(sed -e 's/#.*//' -e 's/\\$//' -e 's/[[:space:]]--hash=[^[:space:]]*//g' \
  -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$lock" | grep -v -e '^$' -e '^--hash=' || true)"
pinned_re='^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[^]]*\])?[[:space:]]*===?[[:space:]]*[^[:space:];*]+([[:space:]]*;.*)?$'
unpinned="$(printf '%s\n' "$requirements" | grep -v -e '^$' | grep -v -E "$pinned_re" || true)"
if [ -n "$unpinned" ]; then
  echo "requirements.txt has lines that do not pin name==version:" >&2
  printf '%s\n' "$unpinned" | sed 's/^/  /' >&2
  exit 2
fi
pins="$(printf '%s\n' "$requirements" | grep -c -E "$pinned_re" || true)"

mkdir -p "$APP_INSTALL_DIR"
# A fresh copy: stale files from an earlier run must not end up in the image.
find "$APP_INSTALL_DIR" -mindepth 1 -delete
cp -R "$APP_SOURCE"/. "$APP_INSTALL_DIR"/
rm -rf "$APP_INSTALL_DIR"/__pycache__ "$APP_INSTALL_DIR"/.venv
files="$(find "$APP_INSTALL_DIR" -type f | wc -l)"
log "installed $SERVICE app: $files files, $pins pinned dependencies"

if [ "$SWITCHYARD_BUILD_MODE" = vm ]; then
  venv="$(dirname "$APP_INSTALL_DIR")/venv"
  run python3 -m venv "$venv"
  if grep -q -- '--hash' "$lock"; then
    run "$venv/bin/pip" install --no-deps --require-hashes -r "$lock"
  else
    run "$venv/bin/pip" install --no-deps -r "$lock"
  fi
  if ! id "$SERVICE" >/dev/null 2>&1; then
    run useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVICE"
  fi
  : "${SERVICE_ENTRYPOINT:?SERVICE_ENTRYPOINT (the manifest entrypoint, space-separated) is required}"
  : "${SERVICE_PORT:?SERVICE_PORT is required}"
  : "${INSTALL_ROOT:?INSTALL_ROOT (holds app/ and manifest.json) is required}"
  # A leading python3 is the virtualenv's interpreter on a VM (docs/architecture.md, image artifact).
  exec_start="${SERVICE_ENTRYPOINT/#python3 /$venv/bin/python }"
  cat >"/etc/systemd/system/switchyard-$SERVICE.service" <<UNIT
[Unit]
Description=switchyard service $SERVICE
After=network-online.target
Wants=network-online.target

[Service]
User=$SERVICE
WorkingDirectory=$INSTALL_ROOT
Environment=SWITCHYARD_LISTEN_HOST=0.0.0.0
Environment=SWITCHYARD_LISTEN_PORT=$SERVICE_PORT
Environment=SWITCHYARD_MANIFEST=$INSTALL_ROOT/manifest.json
# The scale set instance's host name stands in for the instance id the emulator passes.
Environment=SWITCHYARD_INSTANCE_ID=%H
ExecStart=$exec_start
Restart=always
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
  run systemctl enable "switchyard-$SERVICE.service"
else
  log "local mode: dependencies are not installed on a staging root (the lock ships with the image)"
fi

# Lock: the service runs as its own user and must not be able to change its code.
find "$APP_INSTALL_DIR" -type f -exec chmod a-w {} +
find "$APP_INSTALL_DIR" -type d -exec chmod 0755 {} +
log "app files locked read-only under ${APP_INSTALL_DIR#"${TARGET_ROOT%/}"}"
