/// Every conversion between stored number formats and float32, in one place.
///
/// Scalar functions are exact bit-level definitions; the bulk functions give
/// the same bits for whole buffers and are what hot loops call. Rounding is
/// to nearest, ties to even, as torch does it, so qconv writes the bytes torch
/// would write.
public enum FloatConversion {

    // MARK: - Scalars

    /// IEEE half to float32, exact; a NaN comes back quiet with its sign and
    /// payload, as the CPU's conversion instruction (x86 F16C, which torch
    /// uses) returns it.
    ///
    /// Without branches, so that loops calling it vectorize: the half's
    /// exponent and mantissa, shifted into float position, are a float 2^112
    /// too small (a float subnormal for a half subnormal), and one exact
    /// multiplication by 2^112 rebiases both; infinities and NaNs instead get
    /// the all-ones exponent, NaNs also the quiet bit.
    @inline(__always)
    public static func float(fromHalf bits: UInt16) -> Float {
        let h = UInt32(bits)
        let shifted = (h & 0x7FFF) << 13
        let rebiased = (Float(bitPattern: shifted) * 0x1p112).bitPattern
        var magnitude = shifted >= 0x0F80_0000 ? shifted | 0x7F80_0000 : rebiased
        magnitude = shifted > 0x0F80_0000 ? magnitude | 0x0040_0000 : magnitude
        return Float(bitPattern: magnitude | (h & 0x8000) << 16)
    }

    /// float32 to IEEE half, rounding to nearest even; overflow gives infinity,
    /// NaN stays NaN (quiet, top payload bits kept).
    ///
    /// Written without branches (every case computed, then selected) so that
    /// loops calling it vectorize.
    @inline(__always)
    public static func halfBits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = (bits >> 16) & 0x8000
        let magnitude = bits & 0x7FFF_FFFF
        // Normal range: rebias the exponent ((15 - 127) << 23) and round to nearest even.
        let odd = (magnitude >> 13) & 1
        let normal = (magnitude &+ 0xC800_0FFF &+ odd) >> 13
        // Below 2^-14: adding 0.5 aligns the half subnormal grid with float's
        // ulp, so the FPU's own rounding is round-to-nearest-even.
        let subnormal = (Float(bitPattern: magnitude) + 0.5).bitPattern &- 0x3F00_0000
        var result = magnitude < 0x3880_0000 ? subnormal : normal
        result = magnitude >= 0x4780_0000 ? 0x7C00 : result  // overflow and infinity
        result = magnitude > 0x7F80_0000 ? 0x7E00 | ((magnitude >> 13) & 0x3FF) : result  // NaN
        return UInt16(truncatingIfNeeded: result | sign)
    }

    /// bfloat16 to float32: the top half of the float's bits.
    @inline(__always)
    public static func float(fromBFloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// float32 to bfloat16, rounding to nearest even; NaN becomes 0x7FC0 as in torch.
    @inline(__always)
    public static func bfloat16Bits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        return (bits & 0x7FFF_FFFF) > 0x7F80_0000 ? 0x7FC0 : rounded
    }

    /// float8 E4M3 (torch's `float8_e4m3fn`: bias 7, no infinities, max
    /// 448) to float32, exact; 0x7F and 0xFF are NaN, decoded with the bits
    /// torch gives them (0x7FF00000 with the sign).
    ///
    /// Without branches, so that loops calling it vectorize: a normal code's
    /// exponent and mantissa rebiased in the integer bits, a subnormal one
    /// (exponent 0) its mantissa times 2^-9, then selected; no arithmetic on
    /// float subnormals, which x86 cores run hundreds of times slower.
    @inline(__always)
    public static func float(fromE4M3 bits: UInt8) -> Float {
        let magnitude = UInt32(bits & 0x7F)
        let normal = (magnitude << 20) &+ (120 << 23)
        let subnormal = (Float(magnitude & 7) * 0x1p-9).bitPattern
        var result = magnitude < 8 ? subnormal : normal
        result = magnitude == 0x7F ? 0x7FF0_0000 : result
        return Float(bitPattern: result | UInt32(bits & 0x80) << 24)
    }

    /// float8 E5M2 (bias 15, IEEE-like with infinities and NaN) to float32,
    /// exact: the top byte of a half.
    @inline(__always)
    public static func float(fromE5M2 bits: UInt8) -> Float {
        float(fromHalf: UInt16(bits) << 8)
    }

    // MARK: - Bulk

    /// Decodes `count` elements of `dtype` from `source` (2-byte aligned for F16/BF16)
    /// into `destination`. The dtype must satisfy `isDecodableToFloat`.
    public static func decode(_ source: UnsafeRawPointer, dtype: DType, count: Int, into destination: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            decodeHalves(source, count: count, into: destination)
        case .bf16:
            decodeBFloat16s(source, count: count, into: destination)
        case .f64:
            for i in 0..<count {
                destination[i] = Float(source.loadUnaligned(fromByteOffset: i * 8, as: Double.self))
            }
        case .f8e4m3:
            let codes = source.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count { destination[i] = float(fromE4M3: codes[i]) }
        case .f8e5m2:
            decodeE5M2s(source.assumingMemoryBound(to: UInt8.self), count: count, into: destination)
        default:
            preconditionFailure("decode(\(dtype)) is not supported; check isDecodableToFloat first")
        }
    }

    /// Encodes `count` floats as `dtype` (f32, f16, bf16 or f64) into `destination`.
    public static func encode(_ source: UnsafePointer<Float>, count: Int, as dtype: DType, into destination: UnsafeMutableRawPointer) {
        switch dtype {
        case .f32:
            destination.copyMemory(from: source, byteCount: count * 4)
        case .f16:
            encodeHalves(source, count: count, into: destination)
        case .bf16:
            encodeBFloat16s(source, count: count, into: destination)
        case .f64:
            // Exact: every float32 is a float64.
            for i in 0..<count { destination.storeBytes(of: Double(source[i]), toByteOffset: i * 8, as: Double.self) }
        default:
            preconditionFailure("encode(\(dtype)) is not supported; check isEncodableFromFloat first")
        }
    }

    /// Rounds floats to what they would be after a round trip through `dtype`.
    public static func roundTrip(_ values: UnsafeMutablePointer<Float>, count: Int, through dtype: DType) {
        guard dtype == .f16 || dtype == .bf16 else { return }
        forEachRounded(values, count: count, through: dtype) { values[$0] = $1 }
    }

    /// `values += delta`, each delta first rounded as `roundTrip` rounds it, in one pass.
    public static func add(_ delta: UnsafePointer<Float>, roundedThrough dtype: DType, to values: UnsafeMutablePointer<Float>, count: Int) {
        forEachRounded(delta, count: count, through: dtype) { values[$0] += $1 }
    }

    /// Calls `use(i, x)` with each value rounded through `dtype` (F16, BF16;
    /// other dtypes leave it as it is): the one loop of both functions above.
    @inline(__always)
    private static func forEachRounded(_ values: UnsafePointer<Float>, count: Int, through dtype: DType, _ use: (Int, Float) -> Void) {
        switch dtype {
        case .f16:
            #if QCONV_HARDWARE_HALF
            for i in 0..<count { use(i, Float(Float16(values[i]))) }
            #else
            for i in 0..<count { use(i, float(fromHalf: halfBits(from: values[i]))) }
            #endif
        case .bf16: for i in 0..<count { use(i, float(fromBFloat16: bfloat16Bits(from: values[i]))) }
        default: for i in 0..<count { use(i, values[i]) }
        }
    }

    // The bulk loops are plain loops over the scalar functions: LLVM
    // vectorizes them (about 1 G elements/s per core), several times faster
    // than hand-written Swift SIMD code, whose lane conversions and masks
    // compile to scalar code. Where the build targets a CPU with half
    // conversion instructions (x86-64-v3's F16C), the half loops use Swift's
    // Float16 instead, which compiles to them: 3-4 times faster again, and
    // bit for bit the scalar functions' results (FloatConversionTests).

    private static func decodeHalves(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        let halves = source.assumingMemoryBound(to: UInt16.self)
        #if QCONV_HARDWARE_HALF
        for i in 0..<count { destination[i] = Float(Float16(bitPattern: halves[i])) }
        #else
        for i in 0..<count { destination[i] = float(fromHalf: halves[i]) }
        #endif
    }

    private static func decodeE5M2s(_ codes: UnsafePointer<UInt8>, count: Int, into destination: UnsafeMutablePointer<Float>) {
        #if QCONV_HARDWARE_HALF
        for i in 0..<count { destination[i] = Float(Float16(bitPattern: UInt16(codes[i]) << 8)) }
        #else
        for i in 0..<count { destination[i] = float(fromE5M2: codes[i]) }
        #endif
    }

    private static func decodeBFloat16s(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        let halves = source.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { destination[i] = float(fromBFloat16: halves[i]) }
    }

    private static func encodeHalves(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        let halves = destination.assumingMemoryBound(to: UInt16.self)
        #if QCONV_HARDWARE_HALF
        for i in 0..<count { halves[i] = Float16(source[i]).bitPattern }
        #else
        for i in 0..<count { halves[i] = halfBits(from: source[i]) }
        #endif
    }

    private static func encodeBFloat16s(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        let halves = destination.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { halves[i] = bfloat16Bits(from: source[i]) }
    }
}
