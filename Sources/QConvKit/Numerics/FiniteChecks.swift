/// Finding NaN and infinity in decoded and encoded values.
///
/// Written as plain loops without early exits where possible, so that LLVM
/// vectorizes them; the exact position is only looked for once a fast pass
/// found something.
public enum FiniteChecks {
    /// True when no value is NaN or infinite.
    public static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        var special = false
        for v in values { special = special || (v.bitPattern & 0x7F80_0000) == 0x7F80_0000 }
        return !special
    }

    /// The index of the first NaN or infinity, if any.
    public static func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> Int? {
        guard !allFinite(values) else { return nil }
        return values.firstIndex { !$0.isFinite }
    }

    /// The number of NaN and infinite values among `count` encoded values of
    /// `dtype` (F32, F16 or BF16): those whose exponent bits are all ones.
    /// This catches a float32 that was finite but overflowed F16 on encoding.
    public static func nonFiniteCount(encoded: UnsafeRawPointer, dtype: DType, count: Int) -> Int {
        switch dtype {
        case .f32: return specialCount(encoded.assumingMemoryBound(to: UInt32.self), exponent: 0x7F80_0000, count: count)
        case .f16: return specialCount(encoded.assumingMemoryBound(to: UInt16.self), exponent: 0x7C00, count: count)
        case .bf16: return specialCount(encoded.assumingMemoryBound(to: UInt16.self), exponent: 0x7F80, count: count)
        default: return 0
        }
    }

    private static func specialCount<Bits: FixedWidthInteger & UnsignedInteger>(_ values: UnsafePointer<Bits>, exponent: Bits, count: Int) -> Int {
        var special = false
        for i in 0..<count { special = special || (values[i] & exponent) == exponent }
        guard special else { return 0 }
        var found = 0
        for i in 0..<count where (values[i] & exponent) == exponent { found += 1 }
        return found
    }
}
