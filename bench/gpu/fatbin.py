#!/usr/bin/env python3
"""List (and optionally thin) the CUDA fat binary of a shared library.

    fatbin.py LIB                 # print the cubin/PTX entries by kind and arch
    fatbin.py LIB OUT ARCHS       # copy LIB to OUT with every entry whose arch
                                  # is not in ARCHS (e.g. "90") zero-filled

The copy keeps the ELF layout and every entry header; only the payload of
machine code for other GPUs becomes zeros, so the file compresses to a size
the device tool can carry (its 64 MiB limit). The CUDA runtime loads the
entry for the GPU it runs on; on any other GPU the thinned copy fails to
load its kernels, so this is for a check on a known GPU, never for shipping.
"""
import collections
import struct
import subprocess
import sys

MAGIC = 0xBA55ED50


def section(path, name):
    out = subprocess.check_output(["readelf", "-SW", path]).decode()
    for line in out.splitlines():
        if name in line:
            f = line.split("]", 1)[1].split()
            return int(f[3], 16), int(f[4], 16)
    sys.exit(f"{path}: no {name} section")


def entries(data, off, size):
    pos, end = off, off + size
    while pos < end:
        magic, _ver, hsz, fsz = struct.unpack_from("<IHHQ", data, pos)
        if magic != MAGIC:
            pos += 8
            continue
        p, e = pos + hsz, pos + hsz + fsz
        while p < e:
            kind, _ever, ehsz, psize = struct.unpack_from("<HHIQ", data, p)
            arch = struct.unpack_from("<I", data, p + 28)[0]
            yield p, kind, arch, ehsz, psize
            p += ehsz + psize
        pos = e


def main():
    path = sys.argv[1]
    data = bytearray(open(path, "rb").read())
    off, size = section(path, ".nv_fatbin")
    ents = list(entries(data, off, size))
    total, count = collections.Counter(), collections.Counter()
    for _, kind, arch, _, psize in ents:
        k = ("ptx" if kind == 1 else "cubin", arch)
        total[k] += psize
        count[k] += 1
    for k in sorted(total):
        print(f"{k[0]} sm_{k[1]}: {count[k]} entries, {total[k] >> 20} MiB")
    if len(sys.argv) < 4:
        return
    keep = {int(a) for a in sys.argv[3].split(",")}
    if not any(kind == 2 and arch in keep for _, kind, arch, _, _ in ents):
        sys.exit(f"no cubin for sm_{sorted(keep)} in {path}")
    for p, kind, arch, ehsz, psize in ents:
        if not (kind == 2 and arch in keep):
            data[p + ehsz:p + ehsz + psize] = bytes(psize)
    open(sys.argv[2], "wb").write(data)


if __name__ == "__main__":
    main()
