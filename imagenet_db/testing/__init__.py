"""Test data made from the real photos in ``examples/photos`` (for tests, the sample and benchmarks).

``photos``: ImageNet-like JPEGs, odd/broken image files, extracted trees, flat corpora.
``archives``: faithful ILSVRC2012 archive triples (nested train tars, val tar, devkit).
``clsloc``: the same images as ILSVRC2015 CLS-LOC (.tar.gz or extracted), ILSVRC2014/2015
devkits and Kaggle's download (zip, zip holding a .tar.gz, .tar.gz, extracted).
``caffe``: where a stock Caffe is (tools/install_caffe.sh), for the tests that run it.
Needs a source checkout (the photos are not installed with the package).
"""
