#!/usr/bin/env bash
# Moves the group to another template (a new image) one VM at a time. Each VM is recreated under its
# own name with its own disk (RECREATE, max surge 0: the old VM is deleted first, so two VMs with
# one INSTANCE_ID never run); with DRAIN_ON_SIGTERM=true its accounts move to the others before it
# stops, and the next VM waits until this one is back and healthy. From an operator's workstation.
# Usage: PROJECT=my-wafleet ZONE=europe-west1-b TEMPLATE=wafleet-0123456789ab deploy/mig/rollout.sh
#        (REGION=… ZONES=… for a regional group; the previous template is printed for a roll back)
set -euo pipefail
# shellcheck source=deploy/mig/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

template="${TEMPLATE:?set TEMPLATE to a template made by create-template.sh}"
timeout="${STABLE_TIMEOUT:-1200}"

previous="$(gcloud compute instance-groups managed describe "$group" --project="$project" "$scope" --format='value(instanceTemplate.basename())')"
echo "rollout: $group: $previous -> $template (roll back: TEMPLATE=$previous $0)"
# The group's update policy is opportunistic: this changes what a recreated VM gets, nothing more.
gcloud compute instance-groups managed set-instance-template "$group" --project="$project" "$scope" --template="$template"

mapfile -t vms < <(gcloud compute instance-groups managed list-instances "$group" --project="$project" "$scope" --format='value(name)' | sort)
for vm in "${vms[@]}"; do
  echo "rollout: recreating $vm"
  gcloud compute instance-groups managed update-instances "$group" --project="$project" "$scope" \
    --instances="$vm" --minimal-action=replace --most-disruptive-allowed-action=replace
  # Stable: the VM is recreated, RUNNING and healthy by the autohealing check (GET /healthz).
  gcloud compute instance-groups managed wait-until "$group" --project="$project" "$scope" --stable --timeout="$timeout"
done
echo "rollout: every VM of $group runs $template"
