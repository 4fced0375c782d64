import XCTest
import QConvKit
import QConvTestSupport

/// One bitsandbytes reference file from Tests/Fixtures/quant (written by bnb 0.50.2's CPU path).
struct QuantReference {
    let name: String
    let format: FourBitFormat
    let blockSize: Int
    let nested: Bool
    let inputType: DType
    let shape: [Int]
    let checkpoint: Checkpoint

    init(path: String) throws {
        name = (path as NSString).lastPathComponent
        checkpoint = try Checkpoint(path: path)
        let metadata = Dictionary(checkpoint.metadata ?? [], uniquingKeysWith: { first, _ in first })
        format = try XCTUnwrap(metadata["quant_type"].flatMap(FourBitFormat.init(rawValue:)), "\(name): quant_type")
        blockSize = try XCTUnwrap(metadata["blocksize"].flatMap(Int.init), "\(name): blocksize")
        nested = try XCTUnwrap(metadata["nested"], "\(name): nested") == "true"
        let input = try XCTUnwrap(checkpoint.tensor(named: "input")).info
        inputType = input.dtype
        shape = input.shape
    }

    func floats(_ tensor: String) throws -> [Float] {
        try XCTUnwrap(checkpoint.tensor(named: tensor), "\(name) has no \(tensor)").stored.allFloats()
    }

    func bytes(_ tensor: String) throws -> [UInt8] {
        try XCTUnwrap(checkpoint.tensor(named: tensor), "\(name) has no \(tensor)").stored.allBytes()
    }

    /// The first-level 4-bit quantization of `input`.
    func quantizeInput() throws -> (input: [Float], packed: [UInt8], absmax: [Float]) {
        let input = try floats("input")
        var packed = [UInt8](repeating: 0xAA, count: Blockwise4Bit.packedByteCount(elementCount: input.count))
        var absmax = [Float](repeating: .nan, count: Blockwise4Bit.blockCount(elementCount: input.count, blockSize: blockSize))
        Blockwise4Bit.quantize(input, count: input.count, blockSize: blockSize, format: format, packed: &packed, absmax: &absmax)
        return (input, packed, absmax)
    }

    /// Dequantizes and rounds to the input dtype, as bnb's dequantize_4bit(dtype=input dtype) does.
    func dequantize(packed: [UInt8], absmax: [Float], count: Int) -> [Float] {
        var output = [Float](repeating: .nan, count: count)
        Blockwise4Bit.dequantize(packed: packed, count: count, blockSize: blockSize, format: format, absmax: absmax, into: &output,
                                 fp4NegativeZero: Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: shape))
        FloatConversion.roundTrip(&output, count: count, through: inputType)
        return output
    }

    /// Every reference file of a case: `nf4_<case>`, `fp4_<case>`, `nf4_dq_<case>`, `fp4_dq_<case>` (those that exist).
    static func family(_ caseName: String) throws -> [QuantReference] {
        let paths = Fixtures.files(in: "quant").filter { path in
            let name = (path as NSString).lastPathComponent
            return ["nf4_", "fp4_", "nf4_dq_", "fp4_dq_"].contains { name == "\($0)\(caseName).safetensors" }
        }
        XCTAssertFalse(paths.isEmpty, "no reference files for case \(caseName)")
        return try paths.map(QuantReference.init(path:))
    }

    /// Every 4-bit case name in Tests/Fixtures/quant, for checking that each has a test.
    static var allCaseNames: Set<String> {
        let fourBitFiles = Fixtures.files(in: "quant", prefix: "nf4_") + Fixtures.files(in: "quant", prefix: "fp4_")
        return Set(fourBitFiles.map { path -> String in
            var name = String((path as NSString).lastPathComponent.dropLast(".safetensors".count))
            for prefix in ["nf4_dq_", "fp4_dq_", "nf4_", "fp4_"] where name.hasPrefix(prefix) {
                name.removeFirst(prefix.count)
                break
            }
            return name
        })
    }
}

func bitPatterns(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Fails with the number of differing elements and the first few, instead of dumping whole arrays.
func assertIdentical<T: Equatable>(_ actual: [T], _ expected: [T], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    guard actual.count == expected.count else {
        return XCTFail("\(message): \(actual.count) elements, expected \(expected.count)", file: file, line: line)
    }
    let differing = actual.indices.filter { actual[$0] != expected[$0] }
    guard let first = differing.first else { return }
    let examples = differing.prefix(4).map { "[\($0)] \(actual[$0]) != \(expected[$0])" }.joined(separator: ", ")
    XCTFail("\(message): \(differing.count) of \(actual.count) differ, first at \(first): \(examples)", file: file, line: line)
}

/// Bit-for-bit float comparison (tells 0.0 from -0.0, and NaN equals itself).
func assertIdentical(_ actual: [Float], _ expected: [Float], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    assertIdentical(bitPatterns(actual), bitPatterns(expected), message, file: file, line: line)
}

final class Blockwise4BitTests: XCTestCase {

    // MARK: - Reference files, one test per case

    static let cases = ["one_block", "ten_blocks", "tiny_odd", "zero_block", "matrix_remainder", "matrix_outliers",
                        "many_nested_blocks", "fp16_input", "bf16_input", "blocksize32", "blocksize128", "blocksize4096"]

    func testEveryReferenceCaseHasATest() {
        XCTAssertEqual(QuantReference.allCaseNames, Set(Self.cases))
    }

    func testOneBlock() throws { try checkCase("one_block") }
    func testTenBlocks() throws { try checkCase("ten_blocks") }
    func testTinyOdd() throws { try checkCase("tiny_odd") }
    func testZeroBlock() throws { try checkCase("zero_block") }
    func testMatrixRemainder() throws { try checkCase("matrix_remainder") }
    func testMatrixOutliers() throws { try checkCase("matrix_outliers") }
    func testManyNestedBlocks() throws { try checkCase("many_nested_blocks") }
    func testFP16Input() throws { try checkCase("fp16_input") }
    func testBF16Input() throws { try checkCase("bf16_input") }
    func testBlockSize32() throws { try checkCase("blocksize32") }
    func testBlockSize128() throws { try checkCase("blocksize128") }
    func testBlockSize4096() throws { try checkCase("blocksize4096") }

    /// The 4-bit part of every file of a case; the double-quantized files'
    /// second level is checked in DoubleQuantizationTests.
    func checkCase(_ caseName: String) throws {
        for reference in try QuantReference.family(caseName) {
            let name = reference.name
            let (input, packed, absmax) = try reference.quantizeInput()
            assertIdentical(packed, try reference.bytes("packed"), "\(name): packed bytes")
            assertIdentical(reference.format.codebook, try reference.floats("code"), "\(name): codebook ")
            guard !reference.nested else { continue }
            assertIdentical(absmax, try reference.floats("absmax"), "\(name): absmax ")
            let dequantized = reference.dequantize(packed: packed, absmax: absmax, count: input.count)
            assertIdentical(dequantized, try reference.floats("dequant"), "\(name): dequantized values differ")
        }
    }

    // MARK: - Codebooks

    func testCodebooks() {
        XCTAssertEqual(FourBitFormat.nf4.codebook[7], 0)
        XCTAssertEqual(FourBitFormat.nf4.codebook.first, -1)
        XCTAssertEqual(FourBitFormat.nf4.codebook.last, 1)
        XCTAssertEqual(FourBitFormat.nf4.codebook, FourBitFormat.nf4.codebook.sorted())
        XCTAssertEqual(FourBitFormat.fp4.codebook.map { $0 * 12 }, [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3])
        XCTAssertEqual(FourBitFormat.nf4.zeroCode, 7)
        XCTAssertEqual(FourBitFormat.fp4.zeroCode, 0)
    }

    // MARK: - Focused behaviour

    /// Random normal-ish values with a spread of block maxima.
    func sampleValues(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { i in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let unit = Float(state >> 40) / Float(1 << 24) - 0.5
            return unit * Float(1 + (i / 50) % 7)
        }
    }

    func quantize(_ values: [Float], blockSize: Int, format: FourBitFormat) -> (packed: [UInt8], absmax: [Float]) {
        var packed = [UInt8](repeating: 0xAA, count: Blockwise4Bit.packedByteCount(elementCount: values.count))
        var absmax = [Float](repeating: .nan, count: Blockwise4Bit.blockCount(elementCount: values.count, blockSize: blockSize))
        Blockwise4Bit.quantize(values, count: values.count, blockSize: blockSize, format: format, packed: &packed, absmax: &absmax)
        return (packed, absmax)
    }

    func testChunkedQuantizationMatchesOneCall() {
        for format in FourBitFormat.allCases {
            for blockSize in [32, 64, 256] {
                let values = sampleValues(blockSize * 23 + 13, seed: UInt64(blockSize))
                let whole = quantize(values, blockSize: blockSize, format: format)
                for blocksPerChunk in [1, 3, 7] {
                    var packed = [UInt8](repeating: 0x55, count: whole.packed.count)
                    var absmax = [Float](repeating: -1, count: whole.absmax.count)
                    values.withUnsafeBufferPointer { source in
                        packed.withUnsafeMutableBufferPointer { packed in
                            absmax.withUnsafeMutableBufferPointer { absmax in
                                var start = 0
                                while start < source.count {
                                    let count = min(blocksPerChunk * blockSize, source.count - start)
                                    Blockwise4Bit.quantize(source.baseAddress! + start, count: count, blockSize: blockSize, format: format,
                                                           packed: packed.baseAddress! + start / 2,
                                                           absmax: absmax.baseAddress! + start / blockSize)
                                    start += count
                                }
                            }
                        }
                    }
                    assertIdentical(packed, whole.packed, "\(format) block \(blockSize), \(blocksPerChunk) blocks a chunk")
                    assertIdentical(absmax, whole.absmax, "\(format) block \(blockSize), \(blocksPerChunk) blocks a chunk")
                }
            }
        }
    }

    func testOddCountIsPaddedWithTheZeroCode() {
        for format in FourBitFormat.allCases {
            for count in [1, 7, 33, 64 * 3 + 21] {
                let values = sampleValues(count, seed: 7)
                let odd = quantize(values, blockSize: 64, format: format)
                let even = quantize(values + [0], blockSize: 64, format: format)
                XCTAssertEqual(odd.packed.count, (count + 1) / 2)
                XCTAssertEqual(odd.packed, even.packed, "\(format), \(count) values")
                XCTAssertEqual(odd.packed.last.map { $0 & 0xF }, format.zeroCode, "\(format), \(count) values")
                assertIdentical(odd.absmax, even.absmax, "\(format), \(count) values")
            }
        }
    }

    func testZeroBlocks() {
        for format in FourBitFormat.allCases {
            let zeroPair = format.zeroCode << 4 | format.zeroCode
            // A full zero block stores 0; a final partial zero block stores 1e-38.
            let values = sampleValues(64, seed: 3) + [Float](repeating: 0, count: 64) + [Float](repeating: -0.0, count: 30)
            let (packed, absmax) = quantize(values, blockSize: 64, format: format)
            XCTAssertEqual(absmax[1].bitPattern, Float(0).bitPattern, "\(format)")
            XCTAssertEqual(absmax[2].bitPattern, Float(1e-38).bitPattern, "\(format)")
            XCTAssertEqual(Array(packed[32...]), [UInt8](repeating: zeroPair, count: 47), "\(format)")
            // Dequantizing gives zeros back.
            var output = [Float](repeating: .nan, count: values.count)
            Blockwise4Bit.dequantize(packed: packed, count: values.count, blockSize: 64, format: format, absmax: absmax, into: &output)
            XCTAssertEqual(Array(output[64...]), [Float](repeating: 0, count: 94))
        }
    }

    /// With absmax 1 the scale is exactly 1, so each value below is exactly a
    /// midpoint between neighbouring codes: it must take the lower code, and
    /// the next float up the higher one.
    func testValuesOnAMidpointTakeTheLowerCode() {
        for format in FourBitFormat.allCases {
            let codebook = format.codebook
            let sorted = codebook.sorted()
            for k in 0..<15 where sorted[k] != sorted[k + 1] {
                let midpoint = (sorted[k] + sorted[k + 1]) / 2
                for blockSize in [32, 64] {
                    for (count, name) in [(blockSize, "full block"), (6, "partial block")] {
                        var values = [Float](repeating: 0, count: count)
                        values[0] = 1
                        values[2] = midpoint
                        values[3] = midpoint.nextUp
                        let (packed, _) = quantize(values, blockSize: blockSize, format: format)
                        let below = Int(packed[1] >> 4), above = Int(packed[1] & 0xF)
                        XCTAssertEqual(codebook[below], sorted[k], "\(format) midpoint \(k), \(name)")
                        XCTAssertEqual(codebook[above], sorted[k + 1], "\(format) midpoint \(k) next up, \(name)")
                    }
                }
            }
        }
    }

    /// Values where `x * (1 / a)` and `x / a` fall on different sides of a
    /// midpoint: a full block must use the first, the final partial block the second.
    func testFullBlocksMultiplyByTheReciprocalAndThePartialBlockDivides() {
        for format in FourBitFormat.allCases {
            let sorted = format.codebook.sorted()
            let midpoints = (0..<15).map { (sorted[$0] + sorted[$0 + 1]) / 2 }
            func codeValue(_ scaled: Float) -> Float { sorted[midpoints.filter { $0 < scaled }.count] }
            var found = 0
            for absmax: Float in [3, 7, 0.3, 0.07, 11.5] {
                for midpoint in midpoints where midpoint != 0 {
                    var x = midpoint * absmax
                    for _ in 0..<8 { x = x.nextDown }
                    for _ in 0..<16 {
                        defer { x = x.nextUp }
                        let byReciprocal = codeValue(x * (1 / absmax)), byDivision = codeValue(x / absmax)
                        guard byReciprocal != byDivision else { continue }
                        found += 1
                        var full = [Float](repeating: 0, count: 32)
                        full[0] = absmax
                        full[1] = x
                        let fullCode = Int(quantize(full, blockSize: 32, format: format).packed[0] & 0xF)
                        XCTAssertEqual(format.codebook[fullCode], byReciprocal, "\(format) full block, x \(x), absmax \(absmax)")
                        let partialCode = Int(quantize(Array(full[0..<2]), blockSize: 32, format: format).packed[0] & 0xF)
                        XCTAssertEqual(format.codebook[partialCode], byDivision, "\(format) partial block, x \(x), absmax \(absmax)")
                    }
                }
            }
            XCTAssertGreaterThan(found, 0, "\(format): no value tells division from the reciprocal multiply")
        }
    }

    /// bitsandbytes' behaviour, measured: a NaN makes its block's absmax NaN
    /// and all its codes the top code; an infinity makes the absmax infinite,
    /// its own code the top code (inf * 0 is NaN) and finite values zero.
    func testNaNAndInfinityBehaveAsInBitsandbytes() {
        for format in FourBitFormat.allCases {
            let top = UInt8(format.codebook.firstIndex(of: 1)!)
            let zero = format.zeroCode
            var values = [Float](repeating: 0.1, count: 64) + [Float](repeating: 0.1, count: 64)
            values[0] = .nan
            values[64] = -.infinity
            values[65] = 1
            let (packed, absmax) = quantize(values, blockSize: 64, format: format)
            XCTAssertTrue(absmax[0].isNaN)
            XCTAssertEqual(absmax[1], .infinity)
            XCTAssertEqual(Array(packed[0..<32]), [UInt8](repeating: top << 4 | top, count: 32), "\(format)")
            XCTAssertEqual(packed[32], top << 4 | zero, "\(format)")
            XCTAssertEqual(packed[33], zero << 4 | zero, "\(format)")
        }
    }

    func testSubnormalAbsmaxScalesAsTheClampedValue() {
        // torch clamps the scale to 1e-38, so x / 1e-38 with x = 5e-39 is 0.5.
        for format in FourBitFormat.allCases {
            let scale: Float = 1e-38
            let values: [Float] = [scale / 2, -scale / 2, 0, scale / 4]
            let (packed, absmax) = quantize(values, blockSize: 64, format: format)
            XCTAssertEqual(absmax, [1e-38])
            let codebook = format.codebook
            XCTAssertEqual(codebook[Int(packed[0] >> 4)], codebook.min { abs($0 - 0.5) < abs($1 - 0.5) })
            XCTAssertEqual(codebook[Int(packed[1] & 0xF)], codebook.min { abs($0 - 0.25) < abs($1 - 0.25) })
        }
    }

    /// Only FP4 nibble 8 changes, and only its sign (bnb's C++ kernel negates a zero).
    func testFP4NegativeZeroOption() {
        let packed = (0..<256).map { UInt8($0) }
        let absmax: [Float] = [0.5, 2, 3, 4, 5, 6, 7, 8]
        for format in FourBitFormat.allCases {
            var table = [Float](repeating: .nan, count: 512), signed = table
            Blockwise4Bit.dequantize(packed: packed, count: 512, blockSize: 64, format: format, absmax: absmax, into: &table)
            Blockwise4Bit.dequantize(packed: packed, count: 512, blockSize: 64, format: format, absmax: absmax, into: &signed,
                                     fp4NegativeZero: true)
            XCTAssertEqual(table, signed, "\(format): values")
            let negativeZeros = signed.indices.filter { signed[$0].sign == .minus && signed[$0] == 0 }
            let nibbleEight = format == .fp4 ? (0..<512).filter { (packed[$0 / 2] >> ($0 % 2 == 0 ? 4 : 0)) & 0xF == 8 } : []
            XCTAssertEqual(negativeZeros, nibbleEight, "\(format)")
            XCTAssertFalse(table.contains { $0.sign == .minus && $0 == 0 }, "\(format)")
        }
        XCTAssertTrue(Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: [640]))
        XCTAssertTrue(Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: [97, 130]))
        XCTAssertFalse(Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: [97, 131]))
    }

    func testDequantizeChunkWithOddFinalBlock() {
        for format in FourBitFormat.allCases {
            let values = sampleValues(64 * 2 + 5, seed: 11)
            let (packed, absmax) = quantize(values, blockSize: 64, format: format)
            var output = [Float](repeating: .nan, count: values.count)
            Blockwise4Bit.dequantize(packed: packed, count: values.count, blockSize: 64, format: format, absmax: absmax, into: &output)
            for i in 0..<values.count {
                let nibble = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF
                XCTAssertEqual(output[i], format.codebook[Int(nibble)] * absmax[i / 64], "\(format) element \(i)")
            }
            // A chunk starting at the second block reads the same values.
            var tail = [Float](repeating: .nan, count: values.count - 64)
            Blockwise4Bit.dequantize(packed: Array(packed[32...]), count: tail.count, blockSize: 64, format: format,
                                     absmax: Array(absmax[1...]), into: &tail)
            XCTAssertEqual(tail, Array(output[64...]))
        }
    }
}
