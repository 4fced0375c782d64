/// SplitMix64 (Steele, Lea and Flood, 2014), the generator of the DARE
/// masks: the `n`-th output of the stream whose state starts at `key` is
/// `mix(key + (n + 1) * 0x9E3779B97F4A7C15)`, so any element's draw is had
/// without the ones before it, whatever order or thread computes it.
public enum SplitMix64 {
    public static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// The output function (a variant of MurmurHash3's finalizer).
    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The `index`-th output (from 0) of the stream starting at `key`.
    @inline(__always)
    public static func value(key: UInt64, index: UInt64) -> UInt64 {
        mix(key &+ (index &+ 1) &* increment)
    }

    /// The `index`-th output as a uniform number in [0, 1): its top 53 bits.
    @inline(__always)
    public static func unit(key: UInt64, index: UInt64) -> Double {
        Double(value(key: key, index: index) >> 11) * 0x1p-53
    }

    /// The key of a named stream under a seed: `mix(seed ^ FNV-1a-64(label))`.
    public static func key(seed: UInt64, label: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in label.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return mix(seed ^ hash)
    }
}
