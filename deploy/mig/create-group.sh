#!/usr/bin/env bash
# Creates the /healthz health check, the firewall rule that lets Google's health checkers reach it,
# and the managed instance group (empty: add-instance.sh adds each VM with its name and disk), with
# autohealing and an update policy that never runs two VMs of one name: RECREATE keeps the name
# (and so INSTANCE_ID and the stateful disk), max surge 0 means the old VM is gone before the new
# one starts. From an operator's workstation. Safe to run again: what exists is kept.
# Usage: PROJECT=my-wafleet ZONE=europe-west1-b TEMPLATE=wafleet-0123456789ab deploy/mig/create-group.sh
#        PROJECT=my-wafleet REGION=europe-west1 ZONES=europe-west1-b,europe-west1-c TEMPLATE=… deploy/mig/create-group.sh
set -euo pipefail
# shellcheck source=deploy/mig/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

template="${TEMPLATE:?set TEMPLATE to a template made by create-template.sh}"
network="${NETWORK:-default}"
port=8080 # HTTP_PORT's default, which the unit publishes (reconciler/src/config.ts)

if ! gcloud compute health-checks describe "$health_check" --project="$project" >/dev/null 2>&1; then
  # /healthz answers while the process is alive; /readyz (Firestore reachable) would have the group
  # recreate every VM during a Firestore outage, which a recreate cannot fix. Six misses 10 s apart:
  # a long garbage-collection pause or a busy login burst is not a dead process.
  gcloud compute health-checks create http "$health_check" --project="$project" \
    --port="$port" --request-path=/healthz \
    --check-interval=10s --timeout=5s --healthy-threshold=2 --unhealthy-threshold=6
fi

if ! gcloud compute firewall-rules describe "$health_check-probers" --project="$project" >/dev/null 2>&1; then
  # Google's health-check ranges only, to the group's VMs only: /metrics stays off the internet.
  gcloud compute firewall-rules create "$health_check-probers" --project="$project" \
    --network="$network" --direction=INGRESS --action=allow --rules="tcp:$port" \
    --source-ranges=35.191.0.0/16,130.211.0.0/22 --target-tags="$network_tag"
fi

if ! gcloud compute instance-groups managed describe "$group" --project="$project" "$scope" >/dev/null 2>&1; then
  regional_flags=()
  if ((regional)); then
    # A stateful VM cannot move to another zone (its disk is zonal): no proactive redistribution.
    regional_flags=(--zones="${ZONES:?set ZONES for a regional group}" --instance-redistribution-type=none)
  else
    # One VM at a time; a regional group's fixed max-unavailable must cover its zones, so there
    # rollout.sh does the one-at-a-time itself (update-instances, one VM per call).
    regional_flags=(--update-policy-max-unavailable=1)
  fi
  # --initial-delay: a recreated VM installs Docker and pulls the image before /healthz answers.
  # Opportunistic: only rollout.sh (one VM per call) and autohealing replace VMs, never the group
  # on its own at a template change.
  gcloud compute instance-groups managed create "$group" --project="$project" "$scope" \
    --template="$template" --size=0 \
    --health-check="$health_check" --initial-delay=600 \
    --update-policy-type=opportunistic \
    --update-policy-replacement-method=recreate \
    --update-policy-max-surge=0 \
    --update-policy-minimal-action=replace \
    "${regional_flags[@]}"
fi
echo "create-group: $group ($scope) on $template, autohealing on $health_check (GET /healthz :$port). Next: deploy/mig/add-instance.sh for each VM."
