#!/usr/bin/env bash
# Adds one VM to the group under a fixed name, with its own sessions disk attached as the stateful
# device wafleet-sessions (never deleted with the VM). The name is the VM's host name and its
# INSTANCE_ID, and the per-instance config keeps name and disk through recreation, autohealing and
# updates. In a regional group the VM is created in its disk's zone. From an operator's
# workstation. Safe to run again.
# Usage: PROJECT=my-wafleet ZONE=europe-west1-b VM=wafleet-1 deploy/mig/add-instance.sh
#        PROJECT=my-wafleet REGION=europe-west1 ZONES=… VM=wafleet-2 VM_ZONE=europe-west1-c deploy/mig/add-instance.sh
set -euo pipefail
# shellcheck source=deploy/mig/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

vm="${VM:?set VM, e.g. VM=wafleet-1 (the VM name, host name and INSTANCE_ID)}"
vm_zone="${VM_ZONE:-${ZONE:-}}"
[[ -n "$vm_zone" ]] || { echo "add-instance: set VM_ZONE, the zone of $vm (one of $ZONES)" >&2; exit 2; }
disk="${DISK:-$vm-sessions}"
disk_size="${DISK_SIZE:-20GB}"
schedule="${SCHEDULE:-wafleet-sessions-daily}"

if ! gcloud compute resource-policies describe "$schedule" --project="$project" --region="$region" >/dev/null 2>&1; then
  gcloud compute resource-policies create snapshot-schedule "$schedule" --project="$project" --region="$region" \
    --daily-schedule --start-time=03:00 --max-retention-days=14 --on-source-disk-delete=keep-auto-snapshots
fi
if ! gcloud compute disks describe "$disk" --project="$project" --zone="$vm_zone" >/dev/null 2>&1; then
  gcloud compute disks create "$disk" --project="$project" --zone="$vm_zone" \
    --size="$disk_size" --type=pd-balanced --resource-policies="$schedule"
fi

if ! gcloud compute instance-groups managed instance-configs list "$group" --project="$project" "$scope" \
  --format='value(name)' | grep -qx "$vm"; then
  gcloud compute instance-groups managed create-instance "$group" --project="$project" "$scope" \
    --instance="$vm" \
    --stateful-disk="device-name=$device_name,source=projects/$project/zones/$vm_zone/disks/$disk,mode=rw,auto-delete=never"
fi
echo "add-instance: $vm ($vm_zone) with disk $disk as $device_name. Watch: gcloud compute instance-groups managed list-instances $group --project=$project $scope"
