import XCTest
import QConvKit
import QConvTestSupport

final class DoubleQuantizationTests: XCTestCase {

    // MARK: - Reference files, one test per case (only the *_dq_* files of each case)

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

    func checkCase(_ caseName: String) throws {
        let references = try QuantReference.family(caseName).filter(\.nested)
        XCTAssertFalse(references.isEmpty, "no double-quantized reference for \(caseName)")
        for reference in references {
            let name = reference.name
            assertIdentical(DoubleQuantization.dynamicMap, try reference.floats("nested_code"), "\(name): dynamic map ")
            let (input, packed, absmax) = try reference.quantizeInput()
            let referenceOffset = try XCTUnwrap(reference.floats("offset").first)
            let referenceCodes = try reference.bytes("nested_codes")
            let referenceNestedAbsmax = try reference.floats("nested_absmax")

            // With bnb's offset the second level is bit-exact.
            let exact = absmax.withUnsafeBufferPointer { DoubleQuantization.quantize(absmax: $0, offset: referenceOffset) }
            assertIdentical(exact.codes, referenceCodes, "\(name): nested codes")
            assertIdentical(exact.nestedAbsmax, referenceNestedAbsmax, "\(name): nested absmax ")

            // Our own offset (a double mean) is within rounding of torch's float mean.
            let computed = absmax.withUnsafeBufferPointer { DoubleQuantization.quantize(absmax: $0) }
            XCTAssertEqual(computed.offset, referenceOffset, accuracy: abs(referenceOffset) * 1e-6, "\(name): offset")
            XCTAssertEqual(computed.codes.count, absmax.count)

            // Full round trip from our own state agrees with bnb's dequantized tensor.
            var restored = [Float](repeating: .nan, count: absmax.count)
            computed.codes.withUnsafeBufferPointer { codes in
                computed.nestedAbsmax.withUnsafeBufferPointer { nested in
                    DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: computed.offset, into: &restored)
                }
            }
            let dequantized = reference.dequantize(packed: packed, absmax: restored, count: input.count)
            let expected = try reference.floats("dequant")
            let tolerance = 1e-6 * (expected.map(abs).max() ?? 0)
            let agreeing = zip(dequantized, expected).filter { abs($0 - $1) <= tolerance }.count
            XCTAssertGreaterThanOrEqual(Double(agreeing), 0.999 * Double(expected.count),
                                        "\(name): only \(agreeing) of \(expected.count) dequantized values agree")

            // With bnb's own state the restored absmax and the tensor are bit-exact.
            var referenceRestored = [Float](repeating: .nan, count: absmax.count)
            referenceCodes.withUnsafeBufferPointer { codes in
                referenceNestedAbsmax.withUnsafeBufferPointer { nested in
                    DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: referenceOffset, into: &referenceRestored)
                }
            }
            let exactDequantized = reference.dequantize(packed: packed, absmax: referenceRestored, count: input.count)
            assertIdentical(exactDequantized, expected, "\(name): dequantized values differ")
        }
    }

    // MARK: - Focused behaviour

    func testDynamicMapShape() {
        let map = DoubleQuantization.dynamicMap
        XCTAssertEqual(map.count, 256)
        XCTAssertEqual(map, map.sorted())
        XCTAssertEqual(Set(map).count, 256)
        XCTAssertEqual(map.last, 1)
        XCTAssertTrue(map.contains(0))
        XCTAssertEqual(map.first!, -0.993, accuracy: 1e-4)
    }

    func quantize(_ absmax: [Float], offset: Float? = nil) -> DoubleQuantization.Result {
        absmax.withUnsafeBufferPointer { buffer in
            offset.map { DoubleQuantization.quantize(absmax: buffer, offset: $0) } ?? DoubleQuantization.quantize(absmax: buffer)
        }
    }

    func testOffsetIsTheMean() {
        let result = quantize([1, 2, 3, 4.5])
        XCTAssertEqual(result.offset, 2.625)
        XCTAssertEqual(quantize([]).offset, 0)
        XCTAssertEqual(quantize([]).codes, [])
        XCTAssertEqual(quantize([]).nestedAbsmax, [])
    }

    func testBlocksOfTwoHundredFiftySix() {
        let absmax = (0..<600).map { Float($0 % 97) / 100 + 0.01 }
        let result = quantize(absmax)
        XCTAssertEqual(result.codes.count, 600)
        XCTAssertEqual(result.nestedAbsmax.count, 3)
        for block in 0..<3 {
            let slice = absmax[(block * 256)..<min(600, block * 256 + 256)]
            XCTAssertEqual(result.nestedAbsmax[block], slice.map { abs($0 - result.offset) }.max())
        }
        // The block's extreme values take the extreme codes.
        let largest = absmax[0..<256].indices.max { abs(absmax[$0] - result.offset) < abs(absmax[$1] - result.offset) }!
        XCTAssertEqual(DoubleQuantization.dynamicMap[Int(result.codes[largest])], absmax[largest] > result.offset ? 1 : -0.993, accuracy: 1e-4)
    }

    func testBlockEqualToTheOffsetStoresZeros() {
        // The first block is all offset (x - offset = 0): scale 0 and code 0, as bnb stores it.
        let absmax = [Float](repeating: 0.5, count: 256) + [0.25, 0.75]
        let result = quantize(absmax, offset: 0.5)
        XCTAssertEqual(result.nestedAbsmax, [0, 0.25])
        XCTAssertEqual(Array(result.codes[0..<256]), [UInt8](repeating: 0, count: 256))
        XCTAssertEqual(DoubleQuantization.dynamicMap[Int(result.codes[256])], -0.993, accuracy: 1e-4)
        XCTAssertEqual(result.codes[257], 255)
    }

    func testRoundTripError() {
        let absmax = (0..<1000).map { 0.02 + Float(($0 * 7919) % 1000) / 10000 }
        let result = quantize(absmax)
        var restored = [Float](repeating: .nan, count: absmax.count)
        result.codes.withUnsafeBufferPointer { codes in
            result.nestedAbsmax.withUnsafeBufferPointer { nested in
                DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: result.offset, into: &restored)
            }
        }
        for i in 0..<absmax.count {
            // The dynamic map's steps near ±1 are about 1.4%/2 of the block scale.
            XCTAssertEqual(restored[i], absmax[i], accuracy: result.nestedAbsmax[i / 256] * 0.0075, "absmax \(i)")
            XCTAssertEqual(restored[i], DoubleQuantization.dynamicMap[Int(result.codes[i])] * result.nestedAbsmax[i / 256] + result.offset)
        }
    }
}
