import XCTest
import QConvKit
import QConvTestSupport

final class FloatConversionTests: XCTestCase {
    private static let allPatterns: [UInt16] = (0...UInt16.max).map { $0 }

    private static func isHalfNaN(_ h: UInt16) -> Bool { h & 0x7C00 == 0x7C00 && h & 0x03FF != 0 }

    /// A quiet float32 NaN carrying the half's sign and payload in its top
    /// mantissa bits (what x86's F16C conversion returns).
    private static func widenedNaN(_ h: UInt16) -> UInt32 {
        UInt32(h & 0x8000) << 16 | 0x7FC0_0000 | UInt32(h & 0x03FF) << 13
    }

    /// Round-to-nearest-even of float32 bits to bfloat16, by integer arithmetic.
    private static func referenceBFloat16(_ bits: UInt32) -> UInt16 {
        let upper = UInt16(bits >> 16)
        let rest = bits & 0xFFFF
        if rest > 0x8000 || (rest == 0x8000 && upper & 1 == 1) { return upper &+ 1 }
        return upper
    }

    // MARK: - F16

    func testEveryHalfDecodesLikeSwiftFloat16() {
        for h in Self.allPatterns {
            let decoded = FloatConversion.float(fromHalf: h)
            if Self.isHalfNaN(h) {
                XCTAssertTrue(decoded.isNaN)
                XCTAssertEqual(decoded.bitPattern, Self.widenedNaN(h), "half \(String(h, radix: 16))")
            } else {
                let expected = Float(Float16(bitPattern: h))
                XCTAssertEqual(decoded.bitPattern, expected.bitPattern, "half \(String(h, radix: 16))")
            }
        }
    }

    func testEveryHalfRoundTripsThroughFloat() {
        for h in Self.allPatterns {
            let back = FloatConversion.halfBits(from: FloatConversion.float(fromHalf: h))
            if Self.isHalfNaN(h) {
                XCTAssertTrue(Self.isHalfNaN(back), "half \(String(h, radix: 16))")
                // Quieted, sign and payload kept.
                XCTAssertEqual(back, h | 0x0200, "half \(String(h, radix: 16))")
            } else {
                XCTAssertEqual(back, h, "half \(String(h, radix: 16))")
            }
        }
    }

    /// Every float32 next to a tie between two halves (just below, on, just
    /// above), in every binade, both signs, against Swift's correctly rounded Float16(Float).
    func testHalfRoundingAtTiesMatchesSwift() {
        var checked = 0
        for h in UInt16(0)..<0x7C00 {
            let low = FloatConversion.float(fromHalf: h)
            let high = h == 0x7BFF ? Float(65536) : FloatConversion.float(fromHalf: h + 1)
            let tie = (Double(low) + Double(high)) / 2
            let tieFloat = Float(tie)
            XCTAssertEqual(Double(tieFloat), tie, "tie not representable")
            for value in [tieFloat.nextDown, tieFloat, tieFloat.nextUp, low, low.nextUp, high.nextDown] {
                for signed in [value, -value] {
                    let expected = Float16(signed).bitPattern
                    let actual = FloatConversion.halfBits(from: signed)
                    if actual != expected {
                        XCTFail("halfBits(\(signed)) = \(String(actual, radix: 16)), expected \(String(expected, radix: 16))")
                        return
                    }
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 0x7C00 * 12)
    }

    /// A sweep over all of float32 (every 4099th pattern) against Swift's Float16(Float).
    func testHalfEncodingOfFloatSweepMatchesSwift() {
        var bits: UInt32 = 0
        while true {
            let value = Float(bitPattern: bits)
            let actual = FloatConversion.halfBits(from: value)
            if value.isNaN {
                XCTAssertTrue(Self.isHalfNaN(actual))
                XCTAssertEqual(actual & 0x8000, UInt16(bits >> 16) & 0x8000)
            } else if actual != Float16(value).bitPattern {
                return XCTFail("halfBits(\(value) = \(String(bits, radix: 16))) = \(String(actual, radix: 16)), expected \(String(Float16(value).bitPattern, radix: 16))")
            }
            let (next, overflow) = bits.addingReportingOverflow(4099)
            if overflow { break }
            bits = next
        }
    }

    func testHalfEdgeCases() {
        func half(_ value: Float) -> UInt16 { FloatConversion.halfBits(from: value) }
        XCTAssertEqual(half(65504), 0x7BFF)  // max half
        XCTAssertEqual(half(65519.996), 0x7BFF)  // just below the tie with 65536 rounds down
        XCTAssertEqual(half(65520), 0x7C00)  // the tie rounds to even: infinity
        XCTAssertEqual(half(-65520), 0xFC00)
        XCTAssertEqual(half(65536), 0x7C00)
        XCTAssertEqual(half(.greatestFiniteMagnitude), 0x7C00)
        XCTAssertEqual(half(.infinity), 0x7C00)
        XCTAssertEqual(half(-.infinity), 0xFC00)
        XCTAssertEqual(half(0), 0x0000)
        XCTAssertEqual(half(-0.0), 0x8000)
        XCTAssertEqual(half(1), 0x3C00)
        XCTAssertEqual(half(-2), 0xC000)
        XCTAssertEqual(half(0x1p-14), 0x0400)  // min normal
        XCTAssertEqual(half(0x1p-24), 0x0001)  // min subnormal
        XCTAssertEqual(half(0x1p-25), 0x0000)  // half of it: tie to even (0)
        XCTAssertEqual(half(Float(0x1p-25).nextUp), 0x0001)
        XCTAssertEqual(half(0x3p-25), 0x0002)  // 1.5 ulp: tie to even (2)
        XCTAssertEqual(half(0x5p-25), 0x0002)  // 2.5 ulp: tie to even (2)
        XCTAssertEqual(half(0x7p-25), 0x0004)  // 3.5 ulp: tie to even (4)
        XCTAssertEqual(half(Float(0x1p-14) - 0x1p-25), 0x0400)  // largest subnormal + half ulp rounds up to min normal
        XCTAssertEqual(half(.leastNonzeroMagnitude), 0x0000)
        XCTAssertEqual(half(-.leastNonzeroMagnitude), 0x8000)
        XCTAssertEqual(half(1 + 0x1p-11), 0x3C00)  // tie at 1: to even
        XCTAssertEqual(half(1 + 0x3p-11), 0x3C02)  // tie at 1 + ulp: to even
        XCTAssertEqual(half(.nan), 0x7E00)
        XCTAssertEqual(half(-Float.nan), 0xFE00)
        XCTAssertEqual(half(Float(bitPattern: 0x7F80_0001)), 0x7E00)  // signalling NaN with a low payload: quieted
        XCTAssertEqual(half(Float(bitPattern: 0x7FBF_E000)), 0x7FFF)  // top payload bits kept
    }

    // MARK: - BF16

    func testEveryBFloat16DecodesAndRoundTrips() {
        for h in Self.allPatterns {
            let value = FloatConversion.float(fromBFloat16: h)
            XCTAssertEqual(value.bitPattern, UInt32(h) << 16)
            let back = FloatConversion.bfloat16Bits(from: value)
            if value.isNaN {
                XCTAssertEqual(back, 0x7FC0, "bf16 \(String(h, radix: 16))")
            } else {
                XCTAssertEqual(back, h, "bf16 \(String(h, radix: 16))")
            }
        }
    }

    /// For every bfloat16 value, the float32 values at, around and between the
    /// ties above it, against an integer reference of round-to-nearest-even.
    func testBFloat16RoundingMatchesIntegerReference() {
        for upper in 0...UInt32(0xFFFF) {
            for low: UInt32 in [0x0000, 0x0001, 0x3FFF, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF] {
                let bits = upper << 16 | low
                let value = Float(bitPattern: bits)
                let actual = FloatConversion.bfloat16Bits(from: value)
                let expected = value.isNaN ? 0x7FC0 : Self.referenceBFloat16(bits)
                if actual != expected {
                    return XCTFail("bfloat16Bits(\(String(bits, radix: 16))) = \(String(actual, radix: 16)), expected \(String(expected, radix: 16))")
                }
            }
        }
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: .greatestFiniteMagnitude), 0x7F80)  // overflows to infinity
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: -.greatestFiniteMagnitude), 0xFF80)
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: Float(bitPattern: 0x7F7F_7FFF)), 0x7F7F)
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: -.nan), 0x7FC0)
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: Float(bitPattern: 0x7F80_0001)), 0x7FC0)
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: .leastNonzeroMagnitude), 0x0000)
        XCTAssertEqual(FloatConversion.bfloat16Bits(from: -0.0), 0x8000)
    }

    // MARK: - Bulk

    private func decodeBulk(_ bytes: [UInt8], dtype: DType, count: Int, sourceOffset: Int = 0) -> [Float] {
        var padded = [UInt8](repeating: 0xAB, count: sourceOffset) + bytes
        var out = [Float](repeating: -1, count: count + 1)
        padded.withUnsafeMutableBytes { raw in
            out.withUnsafeMutableBufferPointer { FloatConversion.decode(UnsafeRawPointer(raw.baseAddress! + sourceOffset), dtype: dtype, count: count, into: $0.baseAddress!) }
        }
        XCTAssertEqual(out[count], -1, "decode wrote past the end")
        return Array(out[0..<count])
    }

    private func encodeBulk(_ values: [Float], as dtype: DType, destinationOffset: Int = 0) -> [UInt16] {
        var out = [UInt8](repeating: 0xCD, count: destinationOffset + values.count * 2 + 2)
        values.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBytes { FloatConversion.encode(source.baseAddress!, count: values.count, as: dtype, into: $0.baseAddress! + destinationOffset) }
        }
        XCTAssertEqual(Array(out.suffix(2)), [0xCD, 0xCD], "encode wrote past the end")
        XCTAssertEqual(Array(out.prefix(destinationOffset)), [UInt8](repeating: 0xCD, count: destinationOffset), "encode wrote before the start")
        return (0..<values.count).map { UInt16(out[destinationOffset + 2 * $0]) | UInt16(out[destinationOffset + 2 * $0 + 1]) << 8 }
    }

    private static let allPatternBytes: [UInt8] = allPatterns.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }

    func testBulkDecodeEqualsScalarOnAllPatterns() {
        let halves = decodeBulk(Self.allPatternBytes, dtype: .f16, count: 65536)
        let bfloats = decodeBulk(Self.allPatternBytes, dtype: .bf16, count: 65536, sourceOffset: 1)
        for h in Self.allPatterns {
            XCTAssertEqual(halves[Int(h)].bitPattern, FloatConversion.float(fromHalf: h).bitPattern, "f16 \(h)")
            XCTAssertEqual(bfloats[Int(h)].bitPattern, FloatConversion.float(fromBFloat16: h).bitPattern, "bf16 \(h)")
        }
    }

    func testBulkRoundTripThroughHalfEqualsScalar() {
        var values = Self.encodeInputs
        values.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: .f16) }
        for (value, rounded) in zip(Self.encodeInputs, values) {
            let expected = FloatConversion.float(fromHalf: FloatConversion.halfBits(from: value))
            if rounded.bitPattern != expected.bitPattern {
                return XCTFail("f16 round trip of \(String(value.bitPattern, radix: 16)): bulk \(String(rounded.bitPattern, radix: 16)), scalar \(String(expected.bitPattern, radix: 16))")
            }
            // And Swift's own correctly rounded Float16, whichever loop the build uses.
            if value.isNaN ? !rounded.isNaN : rounded.bitPattern != Float(Float16(value)).bitPattern {
                return XCTFail("f16 round trip of \(String(value.bitPattern, radix: 16)): \(String(rounded.bitPattern, radix: 16)), Swift's Float16 gives \(String(Float(Float16(value)).bitPattern, radix: 16))")
            }
        }
    }

    /// Floats that exercise every branch: every decoded half and bfloat16,
    /// their neighbours and ties, and specials.
    private static let encodeInputs: [Float] = {
        var values: [Float] = []
        for h in allPatterns {
            let f = FloatConversion.float(fromHalf: h)
            values += [f, f.nextUp, Float(bitPattern: f.bitPattern | 0x1000), FloatConversion.float(fromBFloat16: h)]
            values.append(Float(bitPattern: UInt32(h) << 16 | 0x8000))
        }
        values += [.nan, -.nan, .infinity, -.infinity, .greatestFiniteMagnitude, 65520, -65520, 0x1p-25, Float(bitPattern: 0x7F80_0001)]
        return values
    }()

    func testBulkEncodeEqualsScalarOnAllPatterns() {
        let inputs = Self.encodeInputs
        let halves = encodeBulk(inputs, as: .f16, destinationOffset: 1)
        let bfloats = encodeBulk(inputs, as: .bf16)
        for (i, value) in inputs.enumerated() {
            if halves[i] != FloatConversion.halfBits(from: value) {
                return XCTFail("f16 encode of \(String(value.bitPattern, radix: 16)): bulk \(halves[i]), scalar \(FloatConversion.halfBits(from: value))")
            }
            if bfloats[i] != FloatConversion.bfloat16Bits(from: value) {
                return XCTFail("bf16 encode of \(String(value.bitPattern, radix: 16)): bulk \(bfloats[i]), scalar \(FloatConversion.bfloat16Bits(from: value))")
            }
        }
    }

    /// Lengths 0...20 cover empty input, the scalar tail alone, one vector, and vectors plus tails.
    func testBulkTailsAndUnalignedPointers() {
        var rng = SystemRandomNumberGenerator()
        let patterns: [UInt16] = (0..<21).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
        let bytes = patterns.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        for count in 0...20 {
            for offset in 0..<4 {
                let halves = decodeBulk(Array(bytes.prefix(count * 2)), dtype: .f16, count: count, sourceOffset: offset)
                let bfloats = decodeBulk(Array(bytes.prefix(count * 2)), dtype: .bf16, count: count, sourceOffset: offset)
                XCTAssertEqual(halves.map(\.bitPattern), patterns.prefix(count).map { FloatConversion.float(fromHalf: $0).bitPattern })
                XCTAssertEqual(bfloats.map(\.bitPattern), patterns.prefix(count).map { FloatConversion.float(fromBFloat16: $0).bitPattern })

                let floats = (0..<count).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng)) }
                XCTAssertEqual(encodeBulk(floats, as: .f16, destinationOffset: offset), floats.map(FloatConversion.halfBits(from:)))
                XCTAssertEqual(encodeBulk(floats, as: .bf16, destinationOffset: offset), floats.map(FloatConversion.bfloat16Bits(from:)))

                // F32 and F64 pass through (F64 rounded), unaligned as well.
                let f32Bytes = floats.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
                XCTAssertEqual(decodeBulk(f32Bytes, dtype: .f32, count: count, sourceOffset: offset).map(\.bitPattern), floats.map(\.bitPattern))
                let doubles = floats.map { Double($0) * 1.000001 }
                let f64Bytes = doubles.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
                XCTAssertEqual(decodeBulk(f64Bytes, dtype: .f64, count: count, sourceOffset: offset).map(\.bitPattern), doubles.map { Float($0).bitPattern })
            }
        }
    }

    func testEncodeF32IsACopy() {
        let values: [Float] = [1, -2, .nan, .infinity, 0x1p-149]
        var out = [UInt8](repeating: 0, count: 21)
        values.withUnsafeBufferPointer { src in out.withUnsafeMutableBytes { FloatConversion.encode(src.baseAddress!, count: 5, as: .f32, into: $0.baseAddress! + 1) } }
        XCTAssertEqual(Array(out[1...]), values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
    }

    // MARK: - F64

    /// Every float32 is a float64: encoding widens exactly, NaN stays NaN,
    /// and decoding gives the float back (dequant restores an F64 source's dtype).
    func testEncodeF64WidensExactly() {
        let values: [Float] = [1, -2.5, .infinity, -.infinity, 0x1p-149, -0.0, .greatestFiniteMagnitude, 0.1, .nan]
        var out = [UInt8](repeating: 0, count: values.count * 8 + 1)
        values.withUnsafeBufferPointer { src in out.withUnsafeMutableBytes { FloatConversion.encode(src.baseAddress!, count: values.count, as: .f64, into: $0.baseAddress! + 1) } }
        let doubles = (0..<values.count).map { i in
            Double(bitPattern: out[1 + i * 8..<1 + i * 8 + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        }
        for (value, double) in zip(values.dropLast(), doubles.dropLast()) {
            XCTAssertEqual(double.bitPattern, Double(value).bitPattern, "\(value)")
        }
        XCTAssertTrue(doubles.last!.isNaN)
        XCTAssertEqual(decodeBulk(Array(out[1...]), dtype: .f64, count: values.count).dropLast().map(\.bitPattern), values.dropLast().map(\.bitPattern))
        XCTAssertTrue(DType.f64.isEncodableFromFloat)
    }

    /// Doubles exactly between two floats round to the even one; a hair
    /// either side rounds to the nearer one. Checked against an integer reference.
    func testDoubleToFloatRounding() {
        var rng = SplitMix64(seed: 7)
        var doubles: [Double] = []
        var expected: [UInt32] = []
        for _ in 0..<20_000 {
            // A random finite float (normal or subnormal) and its successor.
            var low = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7F7F_FFFF)
            if low == .greatestFiniteMagnitude { low = low.nextDown }
            let high = low.nextUp
            let tie = (Double(low) + Double(high)) / 2
            let even = low.bitPattern & 1 == 0 ? low : high
            doubles += [tie, tie.nextDown, tie.nextUp, Double(low), -tie]
            expected += [even.bitPattern, low.bitPattern, high.bitPattern, low.bitPattern, (-even).bitPattern]
        }
        // Overflow: at and beyond the tie above the largest float, infinity.
        let maxTie = Double(Float.greatestFiniteMagnitude) + Double(Float.greatestFiniteMagnitude.ulp) / 2
        doubles += [maxTie.nextDown, maxTie, 1e300, -1e300, .infinity, 1e-300, -1e-300, Double(Float.leastNonzeroMagnitude) / 2]
        expected += [Float.greatestFiniteMagnitude.bitPattern, Float.infinity.bitPattern, Float.infinity.bitPattern,
                     (-Float.infinity).bitPattern, Float.infinity.bitPattern, 0, (-Float(0)).bitPattern, 0]
        let bytes = doubles.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let decoded = decodeBulk(bytes, dtype: .f64, count: doubles.count, sourceOffset: 3)
        for i in doubles.indices where decoded[i].bitPattern != expected[i] {
            return XCTFail("F64 \(doubles[i]) decoded to \(decoded[i]), expected \(Float(bitPattern: expected[i]))")
        }
        XCTAssertTrue(decodeBulk(withUnsafeBytes(of: Double.nan.bitPattern, Array.init), dtype: .f64, count: 1)[0].isNaN)
    }

    func testRoundTripThroughDTypes() {
        var values: [Float] = [1.0009765625, 65520, 0x1p-25, .nan, 3.14159274, 1 + 0x1p-8]
        values.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: .f16) }
        XCTAssertEqual(values[0], 1.0009765625)
        XCTAssertEqual(values[1], .infinity)
        XCTAssertEqual(values[2], 0)
        XCTAssertTrue(values[3].isNaN)
        XCTAssertEqual(values[4], Float(Float16(3.14159274)))
        var bf: [Float] = [1 + 0x1p-8, 1 + 0x3p-8, 3.14159274, .nan]
        bf.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: .bf16) }
        XCTAssertEqual(bf[0], 1)
        XCTAssertEqual(bf[1], 1 + 0x4p-8)
        XCTAssertEqual(bf[2], 3.140625)
        XCTAssertTrue(bf[3].isNaN)
        var same: [Float] = [0.1, 0.2]
        same.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: 2, through: .f32) }
        XCTAssertEqual(same, [0.1, 0.2])
    }
}
