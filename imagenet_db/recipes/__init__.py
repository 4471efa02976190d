"""Recipes: what a command builds, composed from sources, the pipeline and the outputs.

``imagenet`` is ``create_imagenet`` (find SOURCE, write Caffe's aux files, build each stage
with ``pipeline.convert``, the mean, the prototxts and the HTML report); ``formats`` says, per
``--format``, which stages (outputs, splits, record and label order, output folder names) a
build has; ``extract`` writes any SOURCE out as a folder tree (``imagenet-db extract``);
``prototxt`` writes Caffe network and solver definitions for the databases built. The CLI
(``cli/``) is a thin layer over these functions.
"""
