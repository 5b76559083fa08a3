#!/usr/bin/env bash
# Offline data: Fashion-MNIST from the Debian package when apt is available (root),
# otherwise the pipeline falls back as params.yaml allows (data/raw, torchvision download).
set -u
if [ -d /usr/share/datasets/fashion-mnist ]; then
  echo "fashion-mnist: found /usr/share/datasets/fashion-mnist"; exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    && echo "fashion-mnist: installed Debian package dataset-fashion-mnist" && exit 0
fi
echo "fashion-mnist: Debian package unavailable; put the IDX .gz files in data/raw/fashion_mnist/" \
     "or set data.allow_download: true in params.yaml" >&2
exit 0
