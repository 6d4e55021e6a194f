# Sourced by the deploy/mig/*.sh scripts (not run on its own): the variables they share, parsed once.
#   PROJECT  (required)
#   ZONE     a zonal group in this zone, or
#   REGION + ZONES  a regional group over these zones (comma-separated, e.g. europe-west1-b,europe-west1-c)
#   GROUP    the managed instance group (default wafleet)
# Sets: project, group, region, scope (the --zone=… or --region=… flag for group commands), regional (0/1).
project="${PROJECT:?set PROJECT, e.g. PROJECT=my-wafleet}"
group="${GROUP:-wafleet}"
if [[ -n "${ZONE:-}" && -n "${ZONES:-}" ]]; then
  echo "${0##*/}: set ZONE (a zonal group) or REGION and ZONES (a regional group), not both" >&2
  exit 2
fi
if [[ -n "${ZONE:-}" ]]; then
  regional=0
  region="${ZONE%-*}"
  scope="--zone=$ZONE"
elif [[ -n "${REGION:-}" ]]; then
  regional=1
  region="$REGION"
  scope="--region=$REGION"
else
  echo "${0##*/}: set ZONE=europe-west1-b (a zonal group) or REGION=europe-west1 ZONES=europe-west1-b,europe-west1-c (a regional group)" >&2
  exit 2
fi
# Template and health check names are global; the group's update policy and the scripts agree on these.
device_name="wafleet-sessions" # the --device-name that deploy/prepare-disk.sh looks for (/dev/disk/by-id/google-wafleet-sessions)
health_check="${HEALTH_CHECK:-$group-healthz}"
network_tag="${NETWORK_TAG:-wafleet-reconciler}"
