#!/usr/bin/env bash
# The startup script of every VM in the wafleet managed instance group (Debian 12), run as root by
# the guest agent at every boot. It does what steps 6–7 of docs/deploy.md do by hand, from the
# instance template's metadata, with the single-VM scripts themselves (create-template.sh ships them
# as metadata values):
#   install-vm.sh (Docker, the unit, the key fetcher), prepare-disk.sh (the stateful disk, device
#   name wafleet-sessions), /etc/wafleet/unit.env and reconciler.env, the drop-in of unit-dropin.sh,
#   then the service.
# INSTANCE_ID and the container's host name are the VM's name, which the group's per-instance config
# keeps across recreation, autohealing and updates; the disk follows the name.
# Log: journalctl -u google-startup-scripts (or the serial console).
set -euo pipefail

md() { curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "http://metadata.google.internal/computeMetadata/v1/$1"; }
attr() { md "instance/attributes/$1"; }

name="$(md instance/name)"
project="$(md project/project-id)"
zone="$(md instance/zone)"
zone="${zone##*/}"
image="$(attr wafleet-image)"
secret="$(attr wafleet-backup-key-secret)"
key_version="$(attr wafleet-backup-key-version)"

# The single-VM deploy/ directory, rebuilt from metadata so install-vm.sh finds its files beside it.
stage=/var/lib/wafleet-deploy/deploy
rm -rf "$stage"
install -d -m 0755 "$stage"
while read -r key file; do
  attr "$key" >"$stage/$file"
done <<'FILES'
wafleet-install-vm install-vm.sh
wafleet-fetch-backup-key fetch-backup-key.sh
wafleet-prepare-disk prepare-disk.sh
wafleet-upgrade upgrade.sh
wafleet-unit wafleet-reconciler.service
wafleet-unit-env-example unit.env.example
wafleet-reconciler-env-example reconciler.env.example
wafleet-unit-dropin unit-dropin.sh
wafleet-reconciler-env reconciler.env
FILES
chmod 0755 "$stage"/*.sh

# A recreated VM has a new boot disk, so this runs in full then; on a reboot it finds Docker there.
if ! command -v docker >/dev/null || [[ ! -f /etc/systemd/system/wafleet-reconciler.service ]] \
  || ! cmp -s "$stage/wafleet-reconciler.service" /etc/systemd/system/wafleet-reconciler.service; then
  REGION="${zone%-*}" "$stage/install-vm.sh"
fi
/usr/local/lib/wafleet/prepare-disk.sh

if grep -qE '^(INSTANCE_ID|BACKUP_KEY|BACKUP_KEY_PREVIOUS|GCLOUD_PROJECT)=' "$stage/reconciler.env"; then
  echo "startup: the template's wafleet-reconciler-env sets INSTANCE_ID, BACKUP_KEY* or GCLOUD_PROJECT; this script sets the first and last per VM, and the key comes from Secret Manager. Fix deploy/mig/reconciler.env and make a new template." >&2
  exit 2
fi

# Written to temporary files, then moved in only when they differ: a reboot with the same template
# does not restart the service that systemd already started from them.
umask 027
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
{
  printf 'WAFLEET_IMAGE=%s\n' "$image"
  printf 'WAFLEET_HOSTNAME=%s\n' "$name"
  printf 'WAFLEET_PROJECT=%s\n' "$project"
  printf 'WAFLEET_BACKUP_KEY_SECRET=%s\n' "$secret"
  printf 'WAFLEET_BACKUP_KEY_VERSION=%s\n' "$key_version"
} >"$tmp/unit.env"
{
  printf 'GCLOUD_PROJECT=%s\n' "$project"
  printf 'INSTANCE_ID=%s\n' "$name"
  grep -vE '^[[:space:]]*(#|$)' "$stage/reconciler.env"
} >"$tmp/reconciler.env"
install -d -m 0755 /etc/systemd/system/wafleet-reconciler.service.d
"$stage/unit-dropin.sh" /etc/systemd/system/wafleet-reconciler.service "$tmp/reconciler.env" >"$tmp/mig.conf"

changed=0
for pair in unit.env:/etc/wafleet/unit.env reconciler.env:/etc/wafleet/reconciler.env mig.conf:/etc/systemd/system/wafleet-reconciler.service.d/mig.conf; do
  src="$tmp/${pair%%:*}" dst="${pair#*:}"
  if ! cmp -s "$src" "$dst"; then
    install -m 0640 "$src" "$dst"
    changed=1
  fi
done
chmod 0644 /etc/systemd/system/wafleet-reconciler.service.d/mig.conf
systemctl daemon-reload
if ((changed)); then
  echo "startup: configuration written for $name (image $image); (re)starting wafleet-reconciler"
  systemctl restart wafleet-reconciler.service
else
  systemctl start wafleet-reconciler.service
fi
