#!/usr/bin/env bash
# Fetches BACKUP_KEY from Secret Manager into a file only the container's user (uid 1000) can read,
# for BACKUP_KEY_FILE. Runs as root in ExecStartPre of wafleet-reconciler.service; the file lives
# in /run/wafleet (tmpfs), so the key is never on a disk and never in an environment listing.
#
# During a key rotation (docs/deploy.md, "Rotating BACKUP_KEY") it also fetches the previous key,
# for BACKUP_KEY_PREVIOUS_FILE, into <previous file> (default: <output file>-previous). Outside a
# rotation that file is written empty (so a bind mount of it always has a source) and must not be
# named by BACKUP_KEY_PREVIOUS_FILE; the reconciler refuses an empty key file.
#
# Usage: fetch-backup-key.sh <output file> [<previous file>]
#        fetch-backup-key.sh --key-id <version>   prints the keyId the reconciler writes into
#                                                 sessionBackups/* manifests for that version, and
#                                                 nothing else (no file is written; the key is not shown)
# Environment (from /etc/wafleet/unit.env): WAFLEET_PROJECT, WAFLEET_BACKUP_KEY_SECRET, WAFLEET_BACKUP_KEY_VERSION,
# and during a rotation WAFLEET_BACKUP_KEY_PREVIOUS_VERSION (the version the backups were written with).
set -euo pipefail

project="${WAFLEET_PROJECT:?set WAFLEET_PROJECT in /etc/wafleet/unit.env}"
secret="${WAFLEET_BACKUP_KEY_SECRET:?set WAFLEET_BACKUP_KEY_SECRET in /etc/wafleet/unit.env}"
owner="${WAFLEET_KEY_OWNER:-1000:1000}"

# The raw 32 key bytes of the key text on stdin (base64, base64url or hex), to stdout.
key_bytes() {
  local text
  text="$(tr -d '\n\r')"
  if [[ ${#text} -eq 64 && "$text" =~ ^[0-9A-Fa-f]+$ ]]; then
    printf '%b' "$(printf '%s' "$text" | sed 's/../\\x&/g')"
  else
    text="$(printf '%s' "$text" | tr '_-' '/+')"
    [[ ${#text} -eq 43 ]] && text="${text}="
    printf '%s' "$text" | base64 -d
  fi
}

# The manifest keyId of the key text on stdin: the first 16 hex digits of
# sha256("wafleet-backup-key-id" || key bytes), as keyFingerprint in reconciler/src/store/session-backup.ts.
key_id() {
  local sha=(sha256sum)
  command -v sha256sum >/dev/null || sha=(shasum -a 256) # macOS workstations
  { printf 'wafleet-backup-key-id'; key_bytes; } | "${sha[@]}" | cut -c1-16
}

# Refuses "latest": a new secret version must not change a key at the next restart.
pinned() {
  if [[ "$2" == "latest" ]]; then
    echo "fetch-backup-key: $1=latest is refused: pin the version, so a new secret version cannot change the key at the next restart" >&2
    exit 2
  fi
}

# Writes secret version $1 to file $2 (mode 0400, owned by $owner) and prints its keyId (not the key).
fetch() {
  local version="$1" out="$2" what="$3" tmp len
  umask 077
  tmp="$(mktemp "${out}.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: the trap must name this file
  trap "rm -f '$tmp'" EXIT
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
  echo "fetch-backup-key: $what: secret $secret version $version, keyId $(key_id <"$tmp")" >&2
  mv -f "$tmp" "$out"
  trap - EXIT
}

if [[ "${1:-}" == "--key-id" ]]; then
  version="${2:?usage: fetch-backup-key.sh --key-id <version>}"
  gcloud secrets versions access "$version" --secret="$secret" --project="$project" --quiet | key_id
  exit 0
fi

out="${1:?usage: fetch-backup-key.sh <output file> [<previous file>]}"
previous_out="${2:-${out}-previous}"
version="${WAFLEET_BACKUP_KEY_VERSION:?set WAFLEET_BACKUP_KEY_VERSION in /etc/wafleet/unit.env (a number, not latest)}"
previous_version="${WAFLEET_BACKUP_KEY_PREVIOUS_VERSION:-}"

pinned WAFLEET_BACKUP_KEY_VERSION "$version"
[[ -z "$previous_version" ]] || pinned WAFLEET_BACKUP_KEY_PREVIOUS_VERSION "$previous_version"
if [[ -n "$previous_version" && "$previous_version" == "$version" ]]; then
  echo "fetch-backup-key: WAFLEET_BACKUP_KEY_PREVIOUS_VERSION=$previous_version is the current version too: set it to the version the backups were written with (the one before the rotation), or remove it once the rotation is done" >&2
  exit 2
fi

fetch "$version" "$out" WAFLEET_BACKUP_KEY_VERSION
if [[ -n "$previous_version" ]]; then
  fetch "$previous_version" "$previous_out" WAFLEET_BACKUP_KEY_PREVIOUS_VERSION
else
  # No rotation: an empty file, which the reconciler refuses if BACKUP_KEY_PREVIOUS_FILE names it.
  umask 077
  : >"$previous_out"
  chown "$owner" "$previous_out"
  chmod 0400 "$previous_out"
fi
