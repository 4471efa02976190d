#!/usr/bin/env bash
# Install a stock CPU-only Caffe 1.0 (Debian's `caffe` package) for the tests that train the
# examples and check prototxts with the real tools.
#
# Debian 12 has no Caffe package; Debian 11 (bullseye) has caffe 1.0.0+git20180821 (CPU_ONLY).
# Its packages and their missing dependencies are fetched with apt-get from Debian's bullseye
# suite through a private apt configuration (the system's sources and dpkg state are not
# touched) and unpacked with `dpkg -x` into PREFIX/root; PREFIX/bin gets small wrappers
# (caffe, convert_imageset, compute_image_mean, classification, upgrade_net_proto_text,
# upgrade_solver_proto_text) that set LD_LIBRARY_PATH (OpenBLAS first). About 60 MB downloaded,
# 210 MB unpacked,
# ~30 s. Needs apt-get and dpkg (no root: nothing is installed system-wide) and Debian's
# package mirror.
#
# Usage: tools/install_caffe.sh [PREFIX]     (default ~/.cache/imagenet-db/caffe-cpu)
# Prints PREFIX/bin/caffe on success; exits non-zero (the caffe tests are then skipped) if not.
set -euo pipefail

prefix="${1:-${IMAGENET_DB_CAFFE_PREFIX:-$HOME/.cache/imagenet-db/caffe-cpu}}"
bin="$prefix/bin"
if [ -x "$bin/caffe" ] && "$bin/caffe" --version >/dev/null 2>&1; then
    echo "$bin/caffe"
    exit 0
fi
mkdir -p "$prefix/apt/lists/partial" "$prefix/apt/cache/archives/partial" "$prefix/debs"
echo "deb http://deb.debian.org/debian bullseye main" > "$prefix/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$prefix/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "Dir::State::Lists=$prefix/apt/lists" -o "Dir::Cache=$prefix/apt/cache"
          -o "APT::Default-Release=bullseye" -o "Debug::NoLocking=1")
apt-get "${apt_opts[@]}" -qq update
# the packages `caffe` needs that this system does not have (its dpkg status answers the rest)
# (plus OpenBLAS: Caffe on the reference BLAS is 10-15x slower)
mapfile -t packages < <(apt-get "${apt_opts[@]}" -s --no-install-recommends install caffe \
                            libopenblas0-pthread | awk '/^Inst /{print $2}')
if [ "${#packages[@]}" -eq 0 ]; then
    echo "install_caffe.sh: apt found nothing to install for caffe" >&2
    exit 1
fi
(cd "$prefix/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")
rm -rf "$prefix/root.partial"
mkdir -p "$prefix/root.partial"
for deb in "$prefix"/debs/*.deb; do
    dpkg -x "$deb" "$prefix/root.partial"
done
rm -rf "$prefix/root"
mv "$prefix/root.partial" "$prefix/root"
rm -rf "$prefix/debs" "$prefix/apt/cache"  # the unpacked tree is all that is used

root="$prefix/root"
libs="$root/usr/lib/x86_64-linux-gnu/openblas-pthread"
libs="$libs:$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu:$root/usr/lib"
libs="$libs:$root/usr/lib/x86_64-linux-gnu/hdf5/serial:$root/usr/lib/x86_64-linux-gnu/blas"
libs="$libs:$root/usr/lib/x86_64-linux-gnu/lapack"
mkdir -p "$bin"
for tool in caffe convert_imageset compute_image_mean classification upgrade_net_proto_text \
            upgrade_solver_proto_text; do
    cat > "$bin/$tool" <<WRAPPER
#!/bin/sh
# Debian bullseye's $tool (CPU-only Caffe 1.0) unpacked in $root by tools/install_caffe.sh
# (OpenBLAS on one thread unless OPENBLAS_NUM_THREADS says otherwise)
OPENBLAS_NUM_THREADS="\${OPENBLAS_NUM_THREADS:-1}" \\
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/$tool" "\$@"
WRAPPER
    chmod +x "$bin/$tool"
done
"$bin/caffe" --version >&2
echo "$bin/caffe"
