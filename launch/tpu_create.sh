#!/usr/bin/env bash
# Creates a Cloud TPU VM slice through a queued resource and waits until it is ACTIVE.
#
#   TPU_NAME=fcn ZONE=us-central2-b ACCELERATOR=v4-32 RUNTIME=tpu-ubuntu2204-base \
#     [CAPACITY=--spot|--best-effort|--reserved] bash launch/tpu_create.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR:?set ACCELERATOR, e.g. v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
QR_ID="${QR_ID:-${TPU_NAME}-qr}"
gcloud compute tpus queued-resources create "$QR_ID" --node-id "$TPU_NAME" --zone "$ZONE" \
  --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" ${CAPACITY:-}
echo "Waiting for queued resource $QR_ID to become ACTIVE..."
while true; do
  state=$(gcloud compute tpus queued-resources describe "$QR_ID" --zone "$ZONE" --format='value(state.state)')
  echo "  state: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "queued resource $QR_ID is $state" >&2; exit 1 ;;
  esac
  sleep 30
done
