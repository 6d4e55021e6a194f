#!/usr/bin/env bash
# Creates the instance template for one image: Debian 12 running the reconciler image under the
# single-VM systemd unit, as the wafleet-reconciler service account, with startup.sh and the
# deploy/ scripts it runs shipped as metadata. Templates cannot be changed: a new image is a new
# template (rollout.sh then moves the group to it). From an operator's workstation, at the
# repository root. Safe to run again: an existing template of that name is kept.
# Usage: PROJECT=my-wafleet IMAGE=europe-west1-docker.pkg.dev/my-wafleet/wafleet/reconciler:0123456789ab deploy/mig/create-template.sh
#   prints the template's name on the last line (wafleet-<image tag>, or TEMPLATE=… to choose it)
set -euo pipefail

project="${PROJECT:?set PROJECT}"
image="${IMAGE:?set IMAGE to the pinned image, e.g. IMAGE=europe-west1-docker.pkg.dev/my-wafleet/wafleet/reconciler:0123456789ab}"
machine="${MACHINE_TYPE:-e2-standard-2}"
sa="${SA_NAME:-wafleet-reconciler}@$project.iam.gserviceaccount.com"
secret="${SECRET:-wafleet-backup-key}"
key_version="${BACKUP_KEY_VERSION:-1}"
network_tag="${NETWORK_TAG:-wafleet-reconciler}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(dirname "$here")"

tag="${image##*:}"
if [[ "$tag" == "$image" || "$image" == *@* ]]; then
  echo "create-template: IMAGE must end in an immutable :tag (the commit), e.g. …/reconciler:0123456789ab" >&2
  exit 2
fi
if [[ "$key_version" == "latest" ]]; then
  echo "create-template: BACKUP_KEY_VERSION=latest is refused: pin the secret version (docs/deploy.md, step 7)" >&2
  exit 2
fi
# Template names: lowercase letters, digits and hyphens, at most 63 characters.
template="${TEMPLATE:-wafleet-$(tr 'A-Z_.' 'a-z--' <<<"$tag" | cut -c1-55)}"

if ! gcloud compute instance-templates describe "$template" --project="$project" >/dev/null 2>&1; then
  # No --deletion-protection: the group must be able to delete and recreate its VMs. No
  # --create-disk: each VM's sessions disk is its own, attached by its per-instance config.
  gcloud compute instance-templates create "$template" --project="$project" \
    --machine-type="$machine" \
    --image-family=debian-12 --image-project=debian-cloud --boot-disk-size=20GB \
    --service-account="$sa" --scopes=cloud-platform \
    --shielded-secure-boot --shielded-vtpm --shielded-integrity-monitoring \
    --tags="$network_tag" \
    --metadata=enable-oslogin=TRUE,wafleet-image="$image",wafleet-backup-key-secret="$secret",wafleet-backup-key-version="$key_version" \
    --metadata-from-file=startup-script="$here/startup.sh",wafleet-install-vm="$deploy/install-vm.sh",wafleet-fetch-backup-key="$deploy/fetch-backup-key.sh",wafleet-prepare-disk="$deploy/prepare-disk.sh",wafleet-upgrade="$deploy/upgrade.sh",wafleet-unit="$deploy/wafleet-reconciler.service",wafleet-unit-env-example="$deploy/unit.env.example",wafleet-reconciler-env-example="$deploy/reconciler.env.example",wafleet-unit-dropin="$here/unit-dropin.sh",wafleet-reconciler-env="$here/reconciler.env"
fi
echo "create-template: $template runs $image"
echo "$template"
