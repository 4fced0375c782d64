/// The two 4-bit data types of bitsandbytes.
public enum FourBitFormat: String, Sendable, CaseIterable {
    /// NormalFloat4: quantiles of a normal distribution, for normally distributed weights.
    case nf4
    /// bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bit, scaled to [-1, 1]).
    case fp4

    /// The 16 float32 code values, index = nibble, bit-identical to bitsandbytes' tables.
    public var codebook: [Float] { FourBitCodebook.table(for: self).codes }

    /// The nibble that encodes 0.0 (used to pad an odd element count).
    public var zeroCode: UInt8 { FourBitCodebook.table(for: self).zeroCode }
}

/// Everything the 4-bit kernels need to know about one format, computed once.
///
/// bitsandbytes picks a code with `torch.bucketize` over the midpoints of the
/// sorted codebook (`right=False`): the sorted position of x is the number of
/// midpoints below x, so a value exactly on a midpoint takes the lower code.
/// The position is then mapped back to a nibble through the sorting order
/// (the identity for NF4, whose table is sorted).
struct FourBitCodebook: Sendable {
    /// Code values, index = nibble.
    let codes: [Float]
    /// Midpoints of neighbouring sorted codes, float32 `(a + b) / 2` as torch
    /// computes them, each splatted to a vector.
    let midpoints: [SIMD16<Float>]
    /// A byte of two sorted positions to the byte of their nibbles; nil for NF4.
    let nibblesOfPositions: [UInt8]?
    let zeroCode: UInt8
    /// `pairs[byte]` = (code of the high nibble, code of the low nibble).
    let pairs: [SIMD2<Float>]
    /// `pairs` as bnb's C++ CPU dequantizer decodes them: it computes FP4's
    /// nibble 8 as a negated zero, -0.0, where the table holds +0.0.
    let signedZeroPairs: [SIMD2<Float>]

    static let nf4 = FourBitCodebook(codes: [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
        0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
        0.7229568362236023, 1.0,
    ])

    /// bitsandbytes' FP4 table: (0, 0.0625, 8, 12, 4, 6, 2, 3) / 12 and its
    /// negation; nibble 8 holds +0.0 (not -0.0) in bnb's float32 table.
    static let fp4: FourBitCodebook = {
        let positive: [Float] = [0, 0.0625, 8, 12, 4, 6, 2, 3].map { $0 / 12 }
        return FourBitCodebook(codes: positive + positive.map { $0 == 0 ? 0 : -$0 })
    }()

    @inline(__always)
    static func table(for format: FourBitFormat) -> FourBitCodebook {
        switch format {
        case .nf4: return nf4
        case .fp4: return fp4
        }
    }

    init(codes: [Float]) {
        precondition(codes.count == 16)
        self.codes = codes
        // torch.argsort of the FP4 table puts +0.0 (nibble 0) before the second
        // zero (nibble 8): a stable sort by value reproduces that order.
        let order = codes.indices.sorted { codes[$0] < codes[$1] || (codes[$0] == codes[$1] && $0 < $1) }
        let midpoints = (0..<15).map { (codes[order[$0]] + codes[order[$0 + 1]]) / 2 }
        self.midpoints = midpoints.map { SIMD16(repeating: $0) }
        nibblesOfPositions = order == Array(0..<16) ? nil : (0..<256).map { UInt8(order[$0 >> 4] << 4 | order[$0 & 0xF]) }
        // bucketize(0.0) lands on the first midpoint that is >= 0.
        let zeroPosition = midpoints.firstIndex { 0 <= $0 } ?? 15
        zeroCode = UInt8(order[zeroPosition])
        pairs = Self.pairs(of: codes)
        // A zero in the negative half (nibble 8 and up) is -0.0 to the C++ kernel.
        signedZeroPairs = Self.pairs(of: codes.indices.map { codes[$0] == 0 && $0 >= 8 ? -0.0 : codes[$0] })
    }

    /// Runs `body` with an encoder over this codebook's tables.
    @inline(__always)
    func withEncoder<Result>(_ body: (NibbleEncoder) -> Result) -> Result {
        midpoints.withUnsafeBufferPointer { midpoints in
            guard let nibblesOfPositions else {
                return body(NibbleEncoder(midpoints: midpoints.baseAddress!, nibblesOfPositions: nil))
            }
            return nibblesOfPositions.withUnsafeBufferPointer {
                body(NibbleEncoder(midpoints: midpoints.baseAddress!, nibblesOfPositions: $0.baseAddress!))
            }
        }
    }

    private static func pairs(of codes: [Float]) -> [SIMD2<Float>] {
        (0..<256).map { SIMD2(codes[$0 >> 4], codes[$0 & 0xF]) }
    }
}
