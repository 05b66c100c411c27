#!/usr/bin/env bash
# Deletes the TPU slice and its queued resource.
#   TPU_NAME=fcn ZONE=us-central2-b bash launch/tpu_delete.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
QR_ID="${QR_ID:-${TPU_NAME}-qr}"
gcloud compute tpus queued-resources delete "$QR_ID" --zone "$ZONE" --force --async
