#!/usr/bin/env python3
"""A reader of qconv containers written from docs/FORMAT.md alone (standard library only).

usage: python3 docs/read_container.py CONTAINER            list tensors, check every checksum
       python3 docs/read_container.py CONTAINER TENSOR     also print TENSOR's first dequantized values

It exists to show that FORMAT.md is enough to read a container without qconv.
Decoding here is plain Python and slow; it is meant for small files.
"""
import json
import struct
import sys

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]


def f32(x):
    """Rounds a Python float to the nearest float32."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


FP4 = [f32(v / 12) for v in (0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3)]

# The dynamic map of FORMAT.md, as bit patterns.
DYN_BITS = """
bf7e3333 bf7a999a bf770000 bf736666 bf6fcccd bf6c3333 bf68999a bf650000 bf616666 bf5dcccd bf5a3333 bf56999a
bf530000 bf4f6666 bf4bcccd bf483333 bf44999a bf410000 bf3d6666 bf39cccd bf363334 bf32999a bf2f0000 bf2b6666
bf27cccd bf243334 bf20999a bf1d0000 bf196666 bf15cccd bf123334 bf0e999a bf0b0000 bf076666 bf03cccc bf003333
bef93332 bef20000 beeacccc bee3999a bedc6666 bed53333 bece0000 bec6cccc bebf999a beb86666 beb13333 beaa0000
bea2cccc be9b999a be946666 be8d3334 be860000 be7d9999 be6f3333 be60cccd be526666 be440000 be35999a be273333
be18cccd be0a6666 bdf80000 bddb3334 bdc9eb85 bdc428f7 bdbe6667 bdb8a3d7 bdb2e148 bdad1eb8 bda75c2a bda1999a
bd9bd70a bd96147b bd9051eb bd8a8f5d bd84cccd bd7e147b bd728f5d bd670a3d bd5b851f bd500000 bd447ae1 bd38f5c3
bd2d70a3 bd21eb85 bd166667 bd0ae148 bcfeb852 bce7ae15 bcd0a3d7 bcb9999a bca28f5d bc8b851f bc68f5c3 bc3ae148
bc1f3b64 bc160418 bc0ccccd bc039581 bbf4bc6a bbe24dd3 bbcfdf3b bbbd70a4 bbab020d bb989374 bb8624dd bb676c8a
bb428f5c bb1db22d baf1a9fc baa7ef9d ba7765ff ba59e83e ba3c6a80 ba1eecc1 ba016f01 b9c7e283 b98ce705 b923d70b
b8ba1f4b b88aefb3 b8378034 b7b24206 b70205ff b65a1a94 b513a3b7 00000000 3513a3b7 365a1a94 370205ff 37b24206
38378034 388aefb3 38ba1f4b 3923d70b 398ce705 39c7e283 3a016f01 3a1eecc1 3a3c6a80 3a59e83e 3a7765ff 3aa7ef9d
3af1a9fc 3b1db22d 3b428f5c 3b676c8a 3b8624dd 3b989374 3bab020d 3bbd70a4 3bcfdf3b 3be24dd3 3bf4bc6a 3c039581
3c0ccccd 3c160418 3c1f3b64 3c3ae148 3c68f5c3 3c8b851f 3ca28f5d 3cb9999a 3cd0a3d7 3ce7ae15 3cfeb852 3d0ae148
3d166667 3d21eb85 3d2d70a3 3d38f5c3 3d447ae1 3d500000 3d5b851f 3d670a3d 3d728f5d 3d7e147b 3d84cccd 3d8a8f5d
3d9051eb 3d96147b 3d9bd70a 3da1999a 3da75c2a 3dad1eb8 3db2e148 3db8a3d7 3dbe6667 3dc428f7 3dc9eb85 3ddb3334
3df80000 3e0a6666 3e18cccd 3e273333 3e35999a 3e440000 3e526666 3e60cccd 3e6f3333 3e7d9999 3e860000 3e8d3334
3e946666 3e9b999a 3ea2cccc 3eaa0000 3eb13333 3eb86666 3ebf999a 3ec6cccc 3ece0000 3ed53333 3edc6666 3ee3999a
3eeacccc 3ef20000 3ef93332 3f003333 3f03cccc 3f076666 3f0b0000 3f0e999a 3f123334 3f15cccd 3f196666 3f1d0000
3f20999a 3f243334 3f27cccd 3f2b6666 3f2f0000 3f32999a 3f363334 3f39cccd 3f3d6666 3f410000 3f44999a 3f483333
3f4bcccd 3f4f6666 3f530000 3f56999a 3f5a3333 3f5dcccd 3f616666 3f650000 3f68999a 3f6c3333 3f6fcccd 3f736666
3f770000 3f7a999a 3f7e3333 3f800000
"""
DYN = [struct.unpack("<f", struct.pack("<I", int(h, 16)))[0] for h in DYN_BITS.split()]
assert len(DYN) == 256

M = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M


def xxh64(data, seed=0):
    """xxHash64 as specified in https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md"""
    def rnd(acc, lane):
        return (rotl((acc + lane * P2) & M, 31) * P1) & M

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 32 <= n:
            for k in range(4):
                v[k] = rnd(v[k], struct.unpack_from("<Q", data, i + 8 * k)[0])
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
        for k in range(4):
            h = ((h ^ rnd(0, v[k])) * P1 + P4) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        h = (rotl(h ^ rnd(0, struct.unpack_from("<Q", data, i)[0]), 27) * P1 + P4) & M
        i += 8
    if i + 4 <= n:
        h = (rotl(h ^ ((struct.unpack_from("<I", data, i)[0] * P1) & M), 23) * P2 + P3) & M
        i += 4
    while i < n:
        h = (rotl(h ^ ((data[i] * P5) & M), 11) * P1) & M
        i += 1
    h = ((h ^ (h >> 33)) * P2) & M
    h = ((h ^ (h >> 29)) * P3) & M
    return h ^ (h >> 32)


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"QCONVFMT":
        sys.exit(f"{path}: not a qconv container")
    version, flags, hlen, hsum = struct.unpack_from("<IIQQ", blob, 8)
    if version != 1 or flags != 0:
        sys.exit(f"{path}: unsupported version {version} / flags {flags}")
    raw = blob[32:32 + hlen]
    if xxh64(raw) != hsum:
        sys.exit(f"{path}: header checksum mismatch")
    header = json.loads(raw.decode("utf-8"))
    data = memoryview(blob)[32 + hlen:]
    return header, data


def part_bytes(data, part, tensor):
    chunk = bytes(data[part["offset"]:part["offset"] + part["length"]])
    if len(chunk) != part["length"] or "%016x" % xxh64(chunk) != part["xxh64"]:
        sys.exit(f"tensor {tensor}: part {part['name']} is damaged (checksum mismatch)")
    return chunk


def dequantize(tensor, data):
    """The tensor's values as Python floats (float32-rounded), in row-major order."""
    parts = {p["name"]: part_bytes(data, p, tensor["name"]) for p in tensor["parts"]}
    n = 1
    for d in tensor["shape"]:
        n *= d
    scheme, params = tensor["scheme"], tensor["params"]
    if scheme == "raw":
        fmt = {"F32": "f", "F16": "e", "F64": "d"}.get(tensor["dtype"])
        if tensor["dtype"] == "BF16":
            return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack(f"<{n}H", parts["data"])]
        if fmt is None:
            return list(parts["data"])
        return list(struct.unpack(f"<{n}{fmt}", parts["data"]))
    if scheme in ("nf4", "fp4"):
        code = list(NF4 if scheme == "nf4" else FP4)
        if scheme == "fp4" and (tensor["shape"] or [1])[-1] % 2 == 0:
            code[8] = -0.0  # bitsandbytes' CPU kernel decodes this shape's zero code as -0.0 (FORMAT.md)
        bs = params["block_size"]
        if params["double_quant"]:
            offset = struct.unpack("<f", struct.pack("<I", int(params["offset_bits"], 16)))[0]
            nested = struct.unpack(f"<{len(parts['nested_absmax']) // 4}f", parts["nested_absmax"])
            absmax = [f32(f32(DYN[q] * nested[b // 256]) + offset) for b, q in enumerate(parts["absmax_codes"])]
        else:
            absmax = struct.unpack(f"<{len(parts['absmax']) // 4}f", parts["absmax"])
        out = []
        for i in range(n):
            byte = parts["codes"][i // 2]
            nibble = byte >> 4 if i % 2 == 0 else byte & 15
            out.append(f32(code[nibble] * absmax[i // bs]))
        return out
    if scheme == "int8":
        cols = tensor["shape"][-1] if tensor["shape"] else 1
        rows = n // cols if cols else 0
        codes = struct.unpack(f"<{n}b", parts["codes"])
        scales = struct.unpack(f"<{rows}f", parts["row_scales"])
        k = params["outlier_column_count"]
        outlier_cols = struct.unpack(f"<{k}i", parts["outlier_columns"])
        outlier_vals = struct.unpack(f"<{rows * k}e", parts["outlier_values"])
        inv127 = f32(1 / 127)
        out = [f32(f32(codes[i] * scales[i // cols]) * inv127) for i in range(n)]
        for r in range(rows):
            for j, c in enumerate(outlier_cols):
                out[r * cols + c] = outlier_vals[r * k + j]
        return out
    sys.exit(f"tensor {tensor['name']}: unknown scheme {scheme}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    header, data = read(sys.argv[1])
    for f in header["files"]:
        part_bytes(data, f, f["name"])
    for t in header["tensors"]:
        stored = sum(p["length"] for p in t["parts"])
        for p in t["parts"]:
            part_bytes(data, p, t["name"])
        print(f"{t['name']:50s} {t['dtype']:5s} {str(t['shape']):15s} {t['scheme']:5s} {stored:10d} bytes")
    print(f"ok: {len(header['tensors'])} tensors, {len(header['files'])} files, checksums verified")
    if len(sys.argv) > 2:
        tensor = next(t for t in header["tensors"] if t["name"] == sys.argv[2])
        values = dequantize(tensor, data)
        print(sys.argv[2], values[:16], "...")


if __name__ == "__main__":
    main()
