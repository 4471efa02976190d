#!/usr/bin/env sh
# Build ilsvrc12_train_lmdb and ilsvrc12_val_lmdb with imagenet-db's convert_imageset,
# laid out like Caffe's examples/imagenet/create_imagenet.sh so shell recipes keep working.
# Set the variables below (or in the environment); lists are Caffe's train.txt/val.txt
# ('relpath label' lines), e.g. written by `imagenet-db create` or Caffe's get_ilsvrc_aux.sh.
set -e

EXAMPLE=${EXAMPLE:-examples/imagenet}          # where the databases go
DATA=${DATA:-data/ilsvrc12}                    # where train.txt and val.txt are
TRAIN_DATA_ROOT=${TRAIN_DATA_ROOT:-/path/to/imagenet/train/}
VAL_DATA_ROOT=${VAL_DATA_ROOT:-/path/to/imagenet/val/}
RESIZE=${RESIZE:-true}                         # squash to 256x256 as Caffe's recipe does
BACKEND=${BACKEND:-lmdb}

if [ "$RESIZE" = "true" ]; then
  RESIZE_HEIGHT=256
  RESIZE_WIDTH=256
else
  RESIZE_HEIGHT=0
  RESIZE_WIDTH=0
fi

for root in "$TRAIN_DATA_ROOT" "$VAL_DATA_ROOT"; do
  if [ ! -d "$root" ]; then
    echo "error: $root is not a directory; set TRAIN_DATA_ROOT and VAL_DATA_ROOT" >&2
    exit 1
  fi
done

echo "Creating train $BACKEND..."
convert_imageset --resize_height=$RESIZE_HEIGHT --resize_width=$RESIZE_WIDTH --shuffle \
  --backend=$BACKEND "$TRAIN_DATA_ROOT" "$DATA/train.txt" "$EXAMPLE/ilsvrc12_train_$BACKEND"

echo "Creating val $BACKEND..."
convert_imageset --resize_height=$RESIZE_HEIGHT --resize_width=$RESIZE_WIDTH --shuffle \
  --backend=$BACKEND "$VAL_DATA_ROOT" "$DATA/val.txt" "$EXAMPLE/ilsvrc12_val_$BACKEND"

echo "Done."
