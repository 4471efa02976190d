"""imagenet-db: ImageNet (ILSVRC2012) to Caffe Datum LMDB/LevelDB databases and mean image.

Python API (the commands are thin layers over these):
    imagenet_db.pipeline.convert        - records -> Datum database (convert_imageset)
    imagenet_db.observers.mean.compute_db_mean    - mean image of a database (compute_image_mean)
    imagenet_db.recipes.imagenet.create_imagenet - the whole ImageNet recipe (create_imagenet)
    imagenet_db.verify.verify_db         - end-to-end check of a database (imagenet-db verify)
See ARCHITECTURE.md for how records flow through the modules.
"""
__version__ = "0.1.0"
