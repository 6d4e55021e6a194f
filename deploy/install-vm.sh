#!/usr/bin/env bash
# On the VM (as root), from a copy of deploy/: installs Docker, the unit, the key fetcher and the
# configuration templates, and lets Docker pull from Artifact Registry as the VM's service account.
# Does not start the service: fill in /etc/wafleet/*.env first (docs/deploy.md, step 7).
# Usage: sudo REGION=europe-west1 ./install-vm.sh
set -euo pipefail

region="${REGION:?set REGION, e.g. REGION=europe-west1}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "$(id -u)" -ne 0 ]]; then
  echo "install-vm: run as root (sudo)" >&2
  exit 1
fi

apt-get update
apt-get install -y --no-install-recommends docker.io
systemctl enable --now docker

# Root's docker pulls with the VM's service account (roles/artifactregistry.reader on the repository).
gcloud auth configure-docker "$region-docker.pkg.dev" --quiet

install -d -m 0755 /usr/local/lib/wafleet /usr/local/share/doc/wafleet
install -m 0755 "$here/fetch-backup-key.sh" /usr/local/lib/wafleet/fetch-backup-key.sh
install -m 0755 "$here/prepare-disk.sh" /usr/local/lib/wafleet/prepare-disk.sh
install -m 0755 "$here/upgrade.sh" /usr/local/lib/wafleet/upgrade.sh
install -m 0644 "$here/wafleet-reconciler.service" /etc/systemd/system/wafleet-reconciler.service
if [[ -f "$here/../docs/deploy.md" ]]; then
  install -m 0644 "$here/../docs/deploy.md" /usr/local/share/doc/wafleet/deploy.md
fi
install -d -m 0750 /etc/wafleet
for f in unit.env reconciler.env; do
  if [[ ! -f "/etc/wafleet/$f" ]]; then
    install -m 0640 "$here/$f.example" "/etc/wafleet/$f"
  fi
done
systemctl daemon-reload
systemctl enable wafleet-reconciler.service
echo "install-vm: installed. Edit /etc/wafleet/unit.env and /etc/wafleet/reconciler.env, then: systemctl start wafleet-reconciler"
