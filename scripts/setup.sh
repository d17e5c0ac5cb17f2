#!/usr/bin/env bash
# Set up everything metricad needs on a Debian machine with Python >= 3.10:
# the Fashion-MNIST data package, a headless browser (for the report test) and a virtual environment (.venv)
# with metricad and every extra installed (training, serving, faiss, Parquet batch scoring, Ray, the ELPV images,
# tests).
# Safe to run again: finished steps are quick no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the data, and a headless browser that the report test renders the HTML report in.
PACKAGES=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || PACKAGES+=(dataset-fashion-mnist)
command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || PACKAGES+=(chromium-headless-shell)
if [ ${#PACKAGES[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[train,serve,faiss,batch,ray,elpv,test]'
echo "metricad is set up: .venv/bin/metricad --help" >&2
