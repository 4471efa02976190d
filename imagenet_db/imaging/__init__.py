"""Imaging: image file bytes -> an ``Image`` (pixels and/or encoded bytes); no Datum here.

In the order a record meets them: ``sizes`` (the format and declared width x height of
every format OpenCV decodes, from the first bytes) and ``headers`` (``--max_pixels``, JPEG
structure checks: cheap, before any decode); ``decode`` (OpenCV, as Caffe's ``cv::imdecode``:
(H, W, 3) uint8 BGR or (H, W) uint8 gray) or ``fastdecode`` (opt-in libjpeg downscale);
``resize/`` (one module per resize mode, registry ``resize.RESIZE_MODES``); ``transform``
(``TransformOptions`` and ``transform_image``: decode, resize, encode, following Caffe 1.0's
``ReadImageToDatum``). Imports only ``errors``; the outputs turn an ``Image`` into bytes.
"""
