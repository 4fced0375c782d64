/// xxHash64 (seed 0), the checksum of every part of a qconv container.
///
/// Chosen over CRC-32C because a portable implementation runs at memory speed
/// without CPU-specific instructions; the algorithm is specified at
/// https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md and has
/// implementations in most languages (`pip install xxhash`).
public struct XXHash64 {
    private static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    private var v4: UInt64
    private var totalLength: UInt64 = 0
    /// Input not yet consumed by a full 32-byte stripe.
    private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var pendingCount = 0
    private let seed: UInt64

    public init(seed: UInt64 = 0) {
        self.seed = seed
        v1 = seed &+ Self.prime1 &+ Self.prime2
        v2 = seed &+ Self.prime2
        v3 = seed
        v4 = seed &- Self.prime1
    }

    /// The digest of `bytes` in one call.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var hasher = XXHash64(seed: seed)
        hasher.update(bytes)
        return hasher.digest()
    }

    public static func hash(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { hash($0) }
    }

    @inline(__always)
    private static func round(_ accumulator: UInt64, _ input: UInt64) -> UInt64 {
        let value = accumulator &+ input &* prime2
        return ((value << 31) | (value >> 33)) &* prime1
    }

    @inline(__always)
    private static func mergeRound(_ accumulator: UInt64, _ value: UInt64) -> UInt64 {
        (accumulator ^ round(0, value)) &* prime1 &+ prime4
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress, bytes.count > 0 else { return }
        var remaining = bytes.count
        totalLength &+= UInt64(remaining)

        if pendingCount > 0 {
            let take = min(32 - pendingCount, remaining)
            withUnsafeMutableBytes(of: &pending) { stripe in
                (stripe.baseAddress! + pendingCount).copyMemory(from: base, byteCount: take)
            }
            pendingCount += take
            base += take
            remaining -= take
            guard pendingCount == 32 else { return }
            let stripe = pending
            v1 = Self.round(v1, UInt64(littleEndian: stripe.0))
            v2 = Self.round(v2, UInt64(littleEndian: stripe.1))
            v3 = Self.round(v3, UInt64(littleEndian: stripe.2))
            v4 = Self.round(v4, UInt64(littleEndian: stripe.3))
            pendingCount = 0
        }

        var a = v1, b = v2, c = v3, d = v4
        while remaining >= 32 {
            a = Self.round(a, UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
            b = Self.round(b, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            c = Self.round(c, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
            d = Self.round(d, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
            base += 32
            remaining -= 32
        }
        v1 = a; v2 = b; v3 = c; v4 = d

        if remaining > 0 {
            withUnsafeMutableBytes(of: &pending) { stripe in
                stripe.baseAddress!.copyMemory(from: base, byteCount: remaining)
            }
            pendingCount = remaining
        }
    }

    public func digest() -> UInt64 {
        var hash: UInt64
        if totalLength >= 32 {
            hash = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            hash = Self.mergeRound(hash, v1)
            hash = Self.mergeRound(hash, v2)
            hash = Self.mergeRound(hash, v3)
            hash = Self.mergeRound(hash, v4)
        } else {
            hash = seed &+ Self.prime5
        }
        hash &+= totalLength

        var stripe = pending
        return withUnsafeBytes(of: &stripe) { tail -> UInt64 in
            var p = tail.baseAddress!
            var left = pendingCount
            while left >= 8 {
                hash ^= Self.round(0, UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)))
                hash = rotl(hash, 27) &* Self.prime1 &+ Self.prime4
                p += 8
                left -= 8
            }
            if left >= 4 {
                hash ^= UInt64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))) &* Self.prime1
                hash = rotl(hash, 23) &* Self.prime2 &+ Self.prime3
                p += 4
                left -= 4
            }
            while left > 0 {
                hash ^= UInt64(p.load(as: UInt8.self)) &* Self.prime5
                hash = rotl(hash, 11) &* Self.prime1
                p += 1
                left -= 1
            }
            hash ^= hash >> 33
            hash &*= Self.prime2
            hash ^= hash >> 29
            hash &*= Self.prime3
            hash ^= hash >> 32
            return hash
        }
    }

    @inline(__always)
    private func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
}
