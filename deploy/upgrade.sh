#!/usr/bin/env bash
# On the VM (as root): moves the reconciler to another image with never two processes on the disk.
# The new image is pulled while the old container keeps running; then systemd stops the old one
# (SIGTERM, graceful: sessions closed, backups flushed, heartbeat marked stopped, leases released)
# and only after it has exited starts the new one, which takes the accounts over at once.
# Usage: sudo upgrade.sh <image>   e.g. europe-west1-docker.pkg.dev/my-wafleet/wafleet/reconciler:3f2a9c1
set -euo pipefail

image="${1:?usage: upgrade.sh <image reference>}"
unit_env="${UNIT_ENV:-/etc/wafleet/unit.env}"
port="${HTTP_PORT:-8080}"

if [[ "$(id -u)" -ne 0 ]]; then
  echo "upgrade: run as root (sudo)" >&2
  exit 1
fi
docker pull "$image"
previous="$(sed -n 's/^WAFLEET_IMAGE=//p' "$unit_env")"
echo "upgrade: $previous -> $image"
sed -i "s|^WAFLEET_IMAGE=.*|WAFLEET_IMAGE=$image|" "$unit_env"
# restart = ExecStop (docker stop -t 45, waits for the old process to exit), then ExecStart.
systemctl restart wafleet-reconciler.service

deadline=$((SECONDS + 180))
until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  if ((SECONDS > deadline)); then
    echo "upgrade: not ready after 180 s; see journalctl -u wafleet-reconciler -n 200" >&2
    echo "upgrade: to roll back: sudo $0 $previous" >&2
    exit 1
  fi
  state="$(systemctl is-active wafleet-reconciler.service || true)"
  if [[ "$state" != "active" && "$state" != "activating" ]]; then
    echo "upgrade: the service is not running; see journalctl -u wafleet-reconciler -n 200" >&2
    echo "upgrade: to roll back: sudo $0 $previous" >&2
    exit 1
  fi
  sleep 2
done
curl -fsS "http://127.0.0.1:$port/readyz"
echo "upgrade: ready on $image (roll back with: sudo $0 $previous)"
