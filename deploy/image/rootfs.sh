#!/bin/sh
# Lays out the runtime image's file system in DEST: the collector binary and exactly the
# shared libraries (and loader) it links, at the paths ldd reports. Used by the Containerfile's
# builder stage and by `cargo xtask image`, so both images hold the same files.
#
#   rootfs.sh BINARY DEST
set -eu
if [ "$#" -ne 2 ]; then
    echo "usage: $0 BINARY DEST" >&2
    exit 2
fi
binary=$1
dest=$2
if [ ! -x "$binary" ]; then
    echo "$0: $binary is not an executable (build it first: cargo build --release -p collector)" >&2
    exit 1
fi
if ldd "$binary" | grep -q 'not found'; then
    echo "$0: $binary links libraries this system lacks:" >&2
    ldd "$binary" | grep 'not found' >&2
    exit 1
fi
mkdir -p "$dest/usr/bin" "$dest/etc/nodestate"
cp "$binary" "$dest/usr/bin/collector"
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)";
# linux-vdso has no file. -L: the image gets the file a symlink points to, under the name the
# binary asks for.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
done
