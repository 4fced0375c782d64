/// Finding NaN and infinity in decoded and encoded values.
///
/// Written as plain loops without early exits where possible, so that LLVM
/// vectorizes them; the exact position is only looked for once a fast pass
/// found something.
public enum FiniteChecks {
    /// True when no value is NaN or infinite.
    public static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        guard let base = values.baseAddress else { return true }
        return specialCount(UnsafeRawPointer(base).assumingMemoryBound(to: UInt32.self), exponent: 0x7F80_0000, count: values.count) == 0
    }

    /// The index of the first NaN or infinity, if any.
    public static func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> Int? {
        guard !allFinite(values) else { return nil }
        return values.firstIndex { !$0.isFinite }
    }

    /// The number of NaN and infinite values among `count` encoded values of
    /// `dtype` (F32, F16, BF16 or F64): those whose exponent bits are all ones.
    /// This catches a float32 that was finite but overflowed F16 on encoding.
    public static func nonFiniteCount(encoded: UnsafeRawPointer, dtype: DType, count: Int) -> Int {
        switch dtype {
        case .f32: return specialCount(encoded.assumingMemoryBound(to: UInt32.self), exponent: 0x7F80_0000, count: count)
        case .f16: return specialCount(encoded.assumingMemoryBound(to: UInt16.self), exponent: 0x7C00, count: count)
        case .bf16: return specialCount(encoded.assumingMemoryBound(to: UInt16.self), exponent: 0x7F80, count: count)
        case .f64: return specialCount(encoded.assumingMemoryBound(to: UInt64.self), exponent: 0x7FF0_0000_0000_0000, count: count)
        default: return 0
        }
    }

    private static func specialCount<Bits: FixedWidthInteger & UnsignedInteger>(_ values: UnsafePointer<Bits>, exponent: Bits, count: Int) -> Int {
        // The exponent field plus its lowest bit carries into the sign bit
        // exactly when the field is all ones: integer AND, ADD and OR only,
        // which vectorize on every x86-64 (a short-circuit `||` does not).
        let lowestExponentBit = exponent & (~exponent &+ 1)
        let signBit = Bits(1) << (Bits.bitWidth - 1)
        var carries: Bits = 0
        for i in 0..<count { carries |= (values[i] & exponent) &+ lowestExponentBit }
        guard carries & signBit != 0 else { return 0 }
        var found = 0
        for i in 0..<count where (values[i] & exponent) == exponent { found += 1 }
        return found
    }
}
