#!/usr/bin/env bash
# Project-level setup for the reconciler VM, from an operator's workstation (gcloud logged in as a
# project owner). Safe to run again: whatever exists is kept.
#   - enables the APIs the VM uses;
#   - creates the Artifact Registry repository for the image;
#   - creates the service accounts wafleet-reconciler (the VM) and wafleet-functions (Cloud
#     Functions), each with only the roles it needs (docs/deploy.md, step 4);
#   - creates the BACKUP_KEY secret (version 1: 32 random bytes, never written to a file or shown).
# Usage: PROJECT=my-wafleet REGION=europe-west1 deploy/gcp-setup.sh
set -euo pipefail

project="${PROJECT:?set PROJECT, e.g. PROJECT=my-wafleet}"
region="${REGION:?set REGION, e.g. REGION=europe-west1}"
repo="${REPO:-wafleet}"
secret="${SECRET:-wafleet-backup-key}"
sa_name="${SA_NAME:-wafleet-reconciler}"
sa="$sa_name@$project.iam.gserviceaccount.com"

gcloud services enable --project="$project" \
  compute.googleapis.com firestore.googleapis.com secretmanager.googleapis.com \
  artifactregistry.googleapis.com cloudbuild.googleapis.com \
  logging.googleapis.com monitoring.googleapis.com

if ! gcloud artifacts repositories describe "$repo" --project="$project" --location="$region" >/dev/null 2>&1; then
  gcloud artifacts repositories create "$repo" --project="$project" --location="$region" \
    --repository-format=docker --description="wafleet reconciler images"
fi

# Creates a service account unless it exists, and grants it project-wide roles.
ensure_service_account() {
  local name="$1" display="$2" email="$1@$project.iam.gserviceaccount.com"
  shift 2
  if ! gcloud iam service-accounts describe "$email" --project="$project" >/dev/null 2>&1; then
    gcloud iam service-accounts create "$name" --project="$project" --display-name="$display"
    # A new service account takes a few seconds to be visible to IAM everywhere.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      gcloud iam service-accounts describe "$email" --project="$project" >/dev/null 2>&1 && break
      sleep 3
    done
  fi
  for role in "$@"; do
    gcloud projects add-iam-policy-binding "$project" --member="serviceAccount:$email" --role="$role" \
      --condition=None --quiet >/dev/null
  done
}

# The VM: Firestore data (not rules, indexes or admin), log and metric writing.
ensure_service_account "$sa_name" "wafleet reconciler VM" roles/datastore.user roles/logging.logWriter roles/monitoring.metricWriter
# The Cloud Functions' own account (functions/src/global-options.ts): Firestore data and Firebase
# Auth administration (caller re-reads, custom claims, token revocation), nothing else.
fn_sa_name="${FUNCTIONS_SA_NAME:-wafleet-functions}"
fn_sa="$fn_sa_name@$project.iam.gserviceaccount.com"
ensure_service_account "$fn_sa_name" "wafleet Cloud Functions" roles/datastore.user roles/firebaseauth.admin
# Pull the image: this repository only.
gcloud artifacts repositories add-iam-policy-binding "$repo" --project="$project" --location="$region" \
  --member="serviceAccount:$sa" --role=roles/artifactregistry.reader --quiet >/dev/null

if ! gcloud secrets describe "$secret" --project="$project" >/dev/null 2>&1; then
  gcloud secrets create "$secret" --project="$project" --replication-policy=automatic
  # Piped straight in: the key is never in a file, a shell variable or the terminal.
  openssl rand -base64 32 | tr -d '\n' | gcloud secrets versions add "$secret" --project="$project" --data-file=-
fi
# Read the key: this secret only.
gcloud secrets add-iam-policy-binding "$secret" --project="$project" \
  --member="serviceAccount:$sa" --role=roles/secretmanager.secretAccessor --quiet >/dev/null

echo "gcp-setup: done. Service accounts $sa (VM) and $fn_sa (functions); image repository $region-docker.pkg.dev/$project/$repo; secret $secret"
gcloud secrets versions list "$secret" --project="$project" --format='table(name,state,createTime)'
