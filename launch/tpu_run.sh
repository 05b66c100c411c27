#!/usr/bin/env bash
# Copies this checkout to every worker of a TPU slice, installs it, and runs the same
# command on all workers under tmux, one log per worker (~/fcn_jax_run.w<N>.log).
#
#   TPU_NAME=fcn ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/fcn8s \
#     TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets bash launch/tpu_run.sh configs/voc_fcn8s_modern.py [--config.x=y ...]
#
# WORKDIR and TFDS_DATA_DIR must be visible to every worker (GCS). Rerunning the same
# command resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (shared, e.g. gs://...)}"
CONFIG="${1:?give the config file, e.g. configs/voc_fcn8s_modern.py}"; shift
EXTRA="$*"
REPO_DIR="${REPO_DIR:-fcn_jax}"
cd "$(dirname "$0")/.."
tar --exclude=.git --exclude=runs -czf /tmp/fcn_jax_src.tgz .
gcloud compute tpus tpu-vm scp /tmp/fcn_jax_src.tgz "$TPU_NAME":/tmp/ --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p ~/$REPO_DIR && tar -xzf /tmp/fcn_jax_src.tgz -C ~/$REPO_DIR
  cd ~/$REPO_DIR
  python3 -m pip install -q -U 'jax[tpu]' -e .
  W=\$(hostname | sed -E 's/.*-w-([0-9]+)$/\1/')
  tmux kill-session -t fcn_jax 2>/dev/null || true
  tmux new -d -s fcn_jax \"TFDS_DATA_DIR=${TFDS_DATA_DIR:-} python3 -m fcn_jax.main --config $CONFIG --workdir $WORKDIR $EXTRA 2>&1 | tee ~/fcn_jax_run.w\$W.log\"
"
echo "Started on all workers. Follow worker 0 with:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 --command 'tail -f ~/fcn_jax_run.w*.log'"
