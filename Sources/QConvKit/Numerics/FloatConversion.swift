/// Every conversion between stored number formats and float32, in one place.
///
/// Scalar functions are exact bit-level definitions; the bulk functions run the
/// same arithmetic on 8 lanes at once and are what hot loops call. Rounding is
/// to nearest, ties to even, as torch does it, so qconv writes the bytes torch
/// would write.
public enum FloatConversion {

    // MARK: - Scalars

    /// IEEE half to float32, exact (subnormals, infinities and NaN payloads kept).
    @inline(__always)
    public static func float(fromHalf bits: UInt16) -> Float {
        // Giesen's half_to_float: shift into float position and rebias; infinities
        // and NaNs get the rest of the exponent; subnormals are renormalized with
        // one float subtraction.
        let h = UInt32(bits)
        var o = (h & 0x7FFF) << 13
        let exponent = o & 0x0F80_0000
        o &+= (127 - 15) << 23
        if exponent == 0x0F80_0000 {
            o &+= (128 - 16) << 23
        } else if exponent == 0 {
            o &+= 1 << 23
            o = (Float(bitPattern: o) - Float(bitPattern: 113 << 23)).bitPattern
        }
        return Float(bitPattern: o | (h & 0x8000) << 16)
    }

    /// float32 to IEEE half, rounding to nearest even; overflow gives infinity,
    /// NaN stays NaN (quiet, top payload bits kept).
    @inline(__always)
    public static func halfBits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let magnitude = bits & 0x7FFF_FFFF
        if magnitude >= 0x4780_0000 {  // >= 65536: infinity, NaN, or overflow
            if magnitude > 0x7F80_0000 {
                return sign | 0x7E00 | UInt16(truncatingIfNeeded: (magnitude >> 13) & 0x3FF)
            }
            return sign | 0x7C00
        }
        if magnitude < 0x3880_0000 {  // below 2^-14: half subnormal or zero
            // Adding 0.5 aligns the half subnormal grid with float's ulp so the
            // FPU's own rounding does round-to-nearest-even.
            let shifted = Float(bitPattern: magnitude) + 0.5
            return sign | UInt16(truncatingIfNeeded: shifted.bitPattern &- 0x3F00_0000)
        }
        let odd = (magnitude >> 13) & 1
        let rounded = magnitude &+ 0xC800_0FFF &+ odd  // rebias (15 - 127) << 23 and round
        return sign | UInt16(truncatingIfNeeded: rounded >> 13)
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
        if value.isNaN { return 0x7FC0 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    // MARK: - Bulk

    /// Decodes `count` elements of `dtype` from `source` (unaligned allowed)
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
        default:
            preconditionFailure("decode(\(dtype)) is not supported; check isDecodableToFloat first")
        }
    }

    /// Encodes `count` floats as `dtype` (f32, f16 or bf16) into `destination`.
    public static func encode(_ source: UnsafePointer<Float>, count: Int, as dtype: DType, into destination: UnsafeMutableRawPointer) {
        switch dtype {
        case .f32:
            destination.copyMemory(from: source, byteCount: count * 4)
        case .f16:
            encodeHalves(source, count: count, into: destination)
        case .bf16:
            encodeBFloat16s(source, count: count, into: destination)
        default:
            preconditionFailure("encode(\(dtype)) is not supported; check isEncodableFromFloat first")
        }
    }

    /// Rounds floats to what they would be after a round trip through `dtype`.
    public static func roundTrip(_ values: UnsafeMutablePointer<Float>, count: Int, through dtype: DType) {
        switch dtype {
        case .f16: for i in 0..<count { values[i] = float(fromHalf: halfBits(from: values[i])) }
        case .bf16: for i in 0..<count { values[i] = float(fromBFloat16: bfloat16Bits(from: values[i])) }
        default: break
        }
    }

    private static func decodeHalves(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        let lanes = 8
        var i = 0
        let exponentMask = SIMD8<UInt32>(repeating: 0x0F80_0000)
        let magic = SIMD8<Float>(repeating: Float(bitPattern: 113 << 23))
        while i + lanes <= count {
            let h = SIMD8<UInt32>(truncatingIfNeeded: source.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self))
            var o = (h & 0x7FFF) &<< 13
            let exponent = o & exponentMask
            o &+= (127 - 15) << 23
            let special = exponent .== exponentMask
            o.replace(with: o &+ ((128 - 16) << 23), where: special)
            let tiny = exponent .== 0
            let renormalized = (unsafeBitCast(o &+ (1 << 23), to: SIMD8<Float>.self) - magic)
            o.replace(with: unsafeBitCast(renormalized, to: SIMD8<UInt32>.self), where: tiny)
            o |= (h & 0x8000) &<< 16
            UnsafeMutableRawPointer(destination + i).storeBytes(of: unsafeBitCast(o, to: SIMD8<Float>.self), as: SIMD8<Float>.self)
            i += lanes
        }
        while i < count {
            destination[i] = float(fromHalf: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            i += 1
        }
    }

    private static func decodeBFloat16s(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        let lanes = 8
        var i = 0
        while i + lanes <= count {
            let h = SIMD8<UInt32>(truncatingIfNeeded: source.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self))
            UnsafeMutableRawPointer(destination + i).storeBytes(of: unsafeBitCast(h &<< 16, to: SIMD8<Float>.self), as: SIMD8<Float>.self)
            i += lanes
        }
        while i < count {
            destination[i] = float(fromBFloat16: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            i += 1
        }
    }

    private static func encodeHalves(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        let lanes = 8
        var i = 0
        while i + lanes <= count {
            let bits = UnsafeRawPointer(source + i).loadUnaligned(as: SIMD8<UInt32>.self)
            let sign = (bits &>> 16) & 0x8000
            let magnitude = bits & 0x7FFF_FFFF
            // Normal range: rebias and round to nearest even in integer arithmetic.
            let odd = (magnitude &>> 13) & 1
            var result = (magnitude &+ 0xC800_0FFF &+ odd) &>> 13
            // Subnormal range: let the FPU round, as in the scalar version.
            let subnormal = magnitude .< 0x3880_0000
            let shifted = unsafeBitCast(magnitude, to: SIMD8<Float>.self) + 0.5
            result.replace(with: unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- 0x3F00_0000, where: subnormal)
            // Overflow to infinity, NaN stays NaN.
            result.replace(with: SIMD8<UInt32>(repeating: 0x7C00), where: magnitude .>= 0x4780_0000)
            result.replace(with: 0x7E00 | ((magnitude &>> 13) & 0x3FF), where: magnitude .> 0x7F80_0000)
            result |= sign
            destination.storeBytes(of: SIMD8<UInt16>(truncatingIfNeeded: result), toByteOffset: i * 2, as: SIMD8<UInt16>.self)
            i += lanes
        }
        while i < count {
            destination.storeBytes(of: halfBits(from: source[i]), toByteOffset: i * 2, as: UInt16.self)
            i += 1
        }
    }

    private static func encodeBFloat16s(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        let lanes = 8
        var i = 0
        while i + lanes <= count {
            let bits = UnsafeRawPointer(source + i).loadUnaligned(as: SIMD8<UInt32>.self)
            var result = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
            let isNaN = (bits & 0x7FFF_FFFF) .> 0x7F80_0000
            result.replace(with: 0x7FC0, where: isNaN)
            destination.storeBytes(of: SIMD8<UInt16>(truncatingIfNeeded: result), toByteOffset: i * 2, as: SIMD8<UInt16>.self)
            i += lanes
        }
        while i < count {
            destination.storeBytes(of: bfloat16Bits(from: source[i]), toByteOffset: i * 2, as: UInt16.self)
            i += 1
        }
    }
}
