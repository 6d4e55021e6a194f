#!/usr/bin/env bash
# Fetches BACKUP_KEY from Secret Manager into a file only the container's user (uid 1000) can read,
# for BACKUP_KEY_FILE. Runs as root in ExecStartPre of wafleet-reconciler.service; the file lives
# in /run/wafleet (tmpfs), so the key is never on a disk and never in an environment listing.
# Usage: fetch-backup-key.sh <output file>
# Environment (from /etc/wafleet/unit.env): WAFLEET_PROJECT, WAFLEET_BACKUP_KEY_SECRET, WAFLEET_BACKUP_KEY_VERSION.
set -euo pipefail

out="${1:?usage: fetch-backup-key.sh <output file>}"
project="${WAFLEET_PROJECT:?set WAFLEET_PROJECT in /etc/wafleet/unit.env}"
secret="${WAFLEET_BACKUP_KEY_SECRET:?set WAFLEET_BACKUP_KEY_SECRET in /etc/wafleet/unit.env}"
version="${WAFLEET_BACKUP_KEY_VERSION:?set WAFLEET_BACKUP_KEY_VERSION in /etc/wafleet/unit.env (a number, not latest)}"
owner="${WAFLEET_KEY_OWNER:-1000:1000}"

if [[ "$version" == "latest" ]]; then
  echo "fetch-backup-key: WAFLEET_BACKUP_KEY_VERSION=latest is refused: pin the version, so a new secret version cannot change the key at the next restart" >&2
  exit 2
fi

umask 077
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# The VM's service account reads it (roles/secretmanager.secretAccessor on this secret only).
gcloud secrets versions access "$version" --secret="$secret" --project="$project" --quiet >"$tmp"
# Check the shape without printing the value: 44 base64 characters or 64 hex (the reconciler checks again).
len="$(tr -d '\n' <"$tmp" | wc -c)"
if [[ "$len" -ne 44 && "$len" -ne 43 && "$len" -ne 64 ]]; then
  echo "fetch-backup-key: secret $secret version $version holds $len characters, not a 32-byte key (openssl rand -base64 32)" >&2
  exit 1
fi
chown "$owner" "$tmp"
chmod 0400 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
