#!/usr/bin/env bash
# Copies this checkout to every worker of a TPU slice, installs it, and runs the same
# command on all workers under tmux, one log per worker (~/fcn_jax_run.w<N>.log).
#
#   TPU_NAME=fcn ZONE=us-central2-b GCS_BUCKET=BUCKET WORKDIR=/gcs/BUCKET/runs/fcn8s \
#     TFDS_DATA_DIR=/gcs/BUCKET/tensorflow_datasets bash launch/tpu_run.sh configs/voc_fcn8s_modern.py [--config.x=y ...]
#
# WORKDIR and TFDS_DATA_DIR must be visible to every worker. fcn_jax uses file paths, not
# gs:// URLs: with GCS_BUCKET set, every worker mounts that bucket at /gcs/$GCS_BUCKET with
# Cloud Storage FUSE (installed if missing; --rename-dir-limit lets Orbax finalise checkpoint
# directories by renaming them). Rerunning the same command resumes from the latest
# checkpoint in WORKDIR.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (shared by all workers, e.g. /gcs/BUCKET/runs/...)}"
CONFIG="${1:?give the config file, e.g. configs/voc_fcn8s_modern.py}"; shift
EXTRA="$*"
REPO_DIR="${REPO_DIR:-fcn_jax}"
cd "$(dirname "$0")/.."
SRC_TGZ="${TMPDIR:-/tmp}/fcn_jax_src.tgz"
tar --exclude=.git --exclude=runs -czf "$SRC_TGZ" .
gcloud compute tpus tpu-vm scp "$SRC_TGZ" "$TPU_NAME":/tmp/fcn_jax_src.tgz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p ~/$REPO_DIR && tar -xzf /tmp/fcn_jax_src.tgz -C ~/$REPO_DIR
  cd ~/$REPO_DIR
  python3 -m pip install -q -U 'jax[tpu]' -e .
  if [ -n \"${GCS_BUCKET:-}\" ]; then
    if ! command -v gcsfuse >/dev/null; then
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi
    sudo mkdir -p /gcs/${GCS_BUCKET:-} && sudo chown \$(id -u):\$(id -g) /gcs/${GCS_BUCKET:-}
    mountpoint -q /gcs/${GCS_BUCKET:-} || gcsfuse --implicit-dirs --rename-dir-limit=100000 ${GCS_BUCKET:-} /gcs/${GCS_BUCKET:-}
  fi
  W=\$(hostname | sed -E 's/.*-w-([0-9]+)$/\1/')
  tmux kill-session -t fcn_jax 2>/dev/null || true
  tmux new -d -s fcn_jax \"TFDS_DATA_DIR=${TFDS_DATA_DIR:-} python3 -m fcn_jax.main --config $CONFIG --workdir $WORKDIR $EXTRA 2>&1 | tee ~/fcn_jax_run.w\$W.log\"
"
echo "Started on all workers. Follow worker 0 with:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 --command 'tail -f ~/fcn_jax_run.w*.log'"
