#!/usr/bin/env bash
# Creates the sessions disk, its daily snapshot schedule, and the Debian 12 VM that runs the
# reconciler as the wafleet-reconciler service account. From an operator's workstation.
# Usage: PROJECT=my-wafleet ZONE=europe-west1-b VM=wafleet-1 deploy/create-vm.sh
set -euo pipefail

project="${PROJECT:?set PROJECT}"
zone="${ZONE:?set ZONE, e.g. europe-west1-b}"
region="${zone%-*}"
vm="${VM:-wafleet-1}"
disk="${DISK:-$vm-sessions}"
disk_size="${DISK_SIZE:-20GB}"
machine="${MACHINE_TYPE:-e2-standard-2}"
sa="${SA_NAME:-wafleet-reconciler}@$project.iam.gserviceaccount.com"
schedule="${SCHEDULE:-wafleet-sessions-daily}"

if ! gcloud compute resource-policies describe "$schedule" --project="$project" --region="$region" >/dev/null 2>&1; then
  gcloud compute resource-policies create snapshot-schedule "$schedule" --project="$project" --region="$region" \
    --daily-schedule --start-time=03:00 --max-retention-days=14 --on-source-disk-delete=keep-auto-snapshots
fi

if ! gcloud compute disks describe "$disk" --project="$project" --zone="$zone" >/dev/null 2>&1; then
  # pd-balanced: small synchronous writes (credential files are fsynced) without pd-ssd's price.
  gcloud compute disks create "$disk" --project="$project" --zone="$zone" \
    --size="$disk_size" --type=pd-balanced --resource-policies="$schedule"
fi

if ! gcloud compute instances describe "$vm" --project="$project" --zone="$zone" >/dev/null 2>&1; then
  # --hostname is left to the VM name (wafleet-1); --scopes=cloud-platform lets IAM alone decide.
  # --deletion-protection: deleting the VM by mistake must not be one click.
  gcloud compute instances create "$vm" --project="$project" --zone="$zone" \
    --machine-type="$machine" \
    --image-family=debian-12 --image-project=debian-cloud --boot-disk-size=20GB \
    --service-account="$sa" --scopes=cloud-platform \
    --disk=name="$disk",device-name=wafleet-sessions,mode=rw,boot=no,auto-delete=no \
    --shielded-secure-boot --shielded-vtpm --shielded-integrity-monitoring \
    --deletion-protection \
    --metadata=enable-oslogin=TRUE
fi
echo "create-vm: $vm in $zone with disk $disk (snapshots: $schedule). Next: docs/deploy.md, step 6."
