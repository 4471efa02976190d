"""Benchmark: the whole ImageNet read in place (fall11_whole.tar) against an extracted tree of the
same images, in one run.

Writes the fall11-shaped fixture (``imagenet_db.testing.whole``: ``--synsets`` synset tars of
small real-photo JPEGs, some empty) and the same images as an extracted tree
(``train/<wnid>/``), then, each job in its own subprocess (so peak RSS is per job):

* **index, cold**: ``open_dataset`` of fall11_whole.tar with an empty index cache (every
  outer and inner tar header parsed), and **index, cached**: the same again; the cold index
  of 30 synset tars of 650 tiny images each (fall11's mean size) gives the projection;
* **build**: ``create_imagenet`` (caffe LMDB, --resize 64x64, train only, no report) from the
  tar and from the tree, ``--rounds`` times interleaved; images/s is the median (min..max);
* **21,841 synset folders**: ``open_dataset`` of a tree with 21,841 ``train/<wnid>/`` folders
  of one image each (hard links), the extracted whole ImageNet's shape.

Prints one Markdown table and the projection of the index pass to fall11's 14,197,122 images
in 21,841 synset tars (from the per-member time measured here).

    python benchmarks/whole_imagenet.py --synsets 3000 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imagenet_db.testing.whole import WholeSpec, synset_contents, write_fall11  # noqa: E402

FALL11_IMAGES, FALL11_SYNSETS = 14_197_122, 21_841
JOB = r"""
import json, os, resource, sys, time
from imagenet_db.sources import open_dataset
kind, source, out = sys.argv[1:4]
started, cpu = time.monotonic(), time.process_time()
if kind == "index":
    images = len(open_dataset(source).splits["train"].entries)
else:
    from imagenet_db.engine.buildstate import BuildOptions
    from imagenet_db.imaging.transform import TransformOptions
    from imagenet_db.recipes.formats import RecipeOptions
    from imagenet_db.recipes.imagenet import create_imagenet
    summary = create_imagenet(source, out, TransformOptions(resize_width=64, resize_height=64),
                              RecipeOptions(report=False), BuildOptions(workers=2, progress=False),
                              log=lambda _: None)
    images = summary["train"].written
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.monotonic() - started, "cpu": time.process_time() - cpu,
                  "images": images, "rss_mib": rss}))
"""


def run_job(kind: str, source: Path, out: Path, cache: Path) -> dict:
    """One job in a fresh interpreter; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(REPO), IMAGENET_DB_TAR_INDEX_CACHE=str(cache))
    done = subprocess.run([sys.executable, "-c", JOB, kind, str(source), str(out)], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_tree(root: Path, spec: WholeSpec) -> None:
    """The fixture's images as train/<wnid>/<name> (the synsets that have images)."""
    for wnid, files in synset_contents(spec).items():
        if files:
            (root / "train" / wnid).mkdir(parents=True)
            for name, data in files:
                (root / "train" / wnid / name).write_bytes(data)


def write_wide_tree(root: Path, image: Path) -> None:
    """train/<wnid>/ for 21,841 wnids, each with one hard link to ``image``."""
    for i in range(FALL11_SYNSETS):
        folder = root / "train" / f"n{10_000_000 + i:08d}"
        folder.mkdir(parents=True)
        os.link(image, folder / "x_1.JPEG")


def _row(name: str, runs: list, rate: bool = True) -> str:
    seconds = [r["seconds"] for r in runs]
    images = runs[0]["images"]
    speed = (f"{statistics.median(images / s for s in seconds):,.0f} "
             f"({min(images / s for s in seconds):,.0f}..{max(images / s for s in seconds):,.0f})"
             if rate else "")
    return (f"| {name} | {images:,} | {statistics.median(seconds):.2f} | {speed} | "
            f"{statistics.median(r['cpu'] for r in runs) * 1e6 / images:,.0f} | "
            f"{max(r['rss_mib'] for r in runs):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synsets", type=int, default=3000, help="synset tars (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="build rounds (default 3)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="whole-bench-"))
    spec = WholeSpec(synsets=args.synsets)
    write_fall11(work / "f11", spec)
    write_tree(work / "tree", spec)
    wide = WholeSpec(synsets=30, empty=0, jpegs=((8, 8),),
                     counts={w: 650 for w in sorted(synset_contents(spec))[:30]})
    write_fall11(work / "f650", wide)
    rows, cache = {}, work / "cache"
    rows["index, cold"] = [run_job("index", work / "f11", work / "o", cache)]
    rows["index, cold, 30 synset tars of 650"] = [run_job("index", work / "f650", work / "o",
                                                          cache)]
    rows["index, cached"] = [run_job("index", work / "f11", work / "o", cache)]
    builds = {"build from fall11_whole.tar": [], "build from the extracted tree": []}
    for r in range(args.rounds):
        for name, source in zip(builds, (work / "f11", work / "tree")):
            builds[name].append(run_job("build", source, work / f"out-{r}-{len(builds[name])}-"
                                        f"{source.name}", cache))
    rows.update(builds)
    first = next((work / "tree" / "train").glob("*/*.JPEG"))
    write_wide_tree(work / "wide", first)
    rows["tree of 21,841 synset folders"] = [run_job("index", work / "wide", work / "o", cache)]
    print("| job | images | seconds | images/s (min..max) | CPU us/image | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in rows.items():
        print(_row(name, runs, rate=name.startswith("build")))
    cold = rows["index, cold, 30 synset tars of 650"][0]
    per_image = cold["cpu"] / cold["images"]  # with the words table and the lists: an upper bound
    print(f"\nprojection: fall11's index pass ~{per_image * FALL11_IMAGES / 60:,.0f} min of CPU "
          f"({per_image * 1e6:.0f} us a member in synset tars of 650 images, fall11's mean), "
          f"plus reading the headers spread over 1.31 TB once; then cached")


if __name__ == "__main__":
    main()
