#!/usr/bin/env bash
# Prepares the sessions disk on the VM (run as root, once per disk; safe to run again):
# formats it only if it holds no filesystem, mounts it by UUID at the mount point (fstab, nofail),
# creates sessions/ owned by the container's user (uid 1000, mode 0700) and writes the
# .wafleet-volume marker that SESSIONS_REQUIRE_VOLUME=true looks for.
# Usage: prepare-disk.sh [device] [mount point]
#   device       default /dev/disk/by-id/google-wafleet-sessions (the disk's --device-name)
#   mount point  default /mnt/disks/wafleet
set -euo pipefail

device="${1:-/dev/disk/by-id/google-wafleet-sessions}"
mnt="${2:-/mnt/disks/wafleet}"
owner="${WAFLEET_SESSIONS_OWNER:-1000:1000}"

if [[ "$(id -u)" -ne 0 ]]; then
  echo "prepare-disk: run as root (sudo)" >&2
  exit 1
fi
if [[ ! -b "$device" ]]; then
  echo "prepare-disk: $device is not a block device; attach the disk with --device-name=wafleet-sessions (ls -l /dev/disk/by-id/)" >&2
  exit 1
fi

fstype="$(blkid -o value -s TYPE "$device" || true)"
if [[ -z "$fstype" ]]; then
  echo "prepare-disk: $device has no filesystem: formatting it as ext4"
  # Google's recommended options for persistent disks.
  mkfs.ext4 -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard -L wafleet-sessions "$device"
elif [[ "$fstype" != "ext4" ]]; then
  echo "prepare-disk: $device holds a $fstype filesystem; refusing to touch it" >&2
  exit 1
else
  echo "prepare-disk: $device already holds ext4: keeping its contents"
fi

uuid="$(blkid -o value -s UUID "$device")"
mkdir -p "$mnt"
if ! grep -q "UUID=$uuid " /etc/fstab; then
  # nofail: the VM still boots without the disk; the unit (RequiresMountsFor) then does not start.
  echo "UUID=$uuid $mnt ext4 discard,defaults,nofail 0 2" >>/etc/fstab
  systemctl daemon-reload
fi
if ! mountpoint -q "$mnt"; then
  mount "$mnt"
fi
if [[ "$(findmnt -n -o SOURCE --target "$mnt")" != "$(readlink -f "$device")" ]]; then
  echo "prepare-disk: $mnt is not mounted from $device (findmnt -T $mnt)" >&2
  exit 1
fi

sessions="$mnt/sessions"
mkdir -p "$sessions"
chown "$owner" "$sessions"
chmod 0700 "$sessions"
marker="$sessions/.wafleet-volume"
if [[ ! -f "$marker" ]]; then
  printf 'wafleet sessions disk\ndevice=%s\nuuid=%s\nprepared=%s\n' "$device" "$uuid" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$marker"
fi
chown "$owner" "$marker"
chmod 0600 "$marker"
echo "prepare-disk: $sessions is ready (SESSIONS_PATH in the container: /var/lib/wafleet)"
