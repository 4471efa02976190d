#!/usr/bin/env bash
# Remake the pictures README.md shows (docs/pictures/), with imagenet-db's own commands, from the
# bundled sample: `imagenet-db show` writes the contact sheet; the report page that
# `create_imagenet` writes is photographed by headless Chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=/tmp/imagenet-db-readme   # a fixed path: it appears in the pictures
rm -rf "$work" && mkdir -p "$work"
python3 -m imagenet_db.cli create --no-progress examples/sample_imagenet "$work/sample_out"
python3 -m imagenet_db.cli show "$work/sample_out/ilsvrc12_train_lmdb" --count 10 --tile 96 \
    --columns 10 --out docs/pictures/show_sample_train.png --overwrite
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chromium" --hide-scrollbars --window-size=1000,1350 \
    --screenshot=docs/pictures/report_sample.png "file://$work/sample_out/report.html" 2>/dev/null
ls -l docs/pictures/
