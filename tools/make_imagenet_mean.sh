#!/usr/bin/env sh
# Compute imagenet_mean.binaryproto from the train database with imagenet-db's
# compute_image_mean, like Caffe's examples/imagenet/make_imagenet_mean.sh.
set -e

EXAMPLE=${EXAMPLE:-examples/imagenet}
DATA=${DATA:-data/ilsvrc12}
BACKEND=${BACKEND:-lmdb}

compute_image_mean --backend=$BACKEND "$EXAMPLE/ilsvrc12_train_$BACKEND" "$DATA/imagenet_mean.binaryproto"

echo "Done."
