import XCTest
@testable import QConvKit

/// The pass that computes a 4-bit tensor's scheme before it is encoded (what
/// the bitsandbytes writer plans with) gives exactly the encoder's.
final class FinalSchemeTests: XCTestCase {
    func testBlockAbsmaxIsWhatQuantizeStores() {
        var generator = SystemRandomNumberGenerator()
        for (count, blockSize) in [(64, 64), (1000, 64), (1, 32), (4096 + 17, 128), (300, 4096)] {
            var values = (0..<count).map { _ in Float.random(in: -2...2, using: &generator) }
            // A zero full block and, where there is one, an all-zero final partial block.
            if count >= blockSize { for i in 0..<blockSize { values[i] = 0 } }
            if count % blockSize != 0 { for i in (count - count % blockSize)..<count { values[i] = 0 } }
            let blocks = (count + blockSize - 1) / blockSize
            var stored = [Float](repeating: -1, count: blocks), computed = [Float](repeating: -1, count: blocks)
            var packed = [UInt8](repeating: 0, count: (count + 1) / 2)
            Blockwise4Bit.quantize(values, count: count, blockSize: blockSize, format: .nf4, packed: &packed, absmax: &stored)
            Blockwise4Bit.absmax(values, count: count, blockSize: blockSize, into: &computed)
            XCTAssertEqual(computed.map(\.bitPattern), stored.map(\.bitPattern), "\(count) / \(blockSize)")
            for mean in [DoubleQuantization.Mean.float64, .torchFloat32] {
                stored.withUnsafeBufferPointer { absmax in
                    XCTAssertEqual(DoubleQuantization.quantize(absmax: absmax, mean: mean).offset, DoubleQuantization.offset(absmax: absmax, mean: mean))
                }
            }
        }
    }

    /// `ConversionStep.finalScheme` of a double-quantized tensor carries the offset `encode` will find.
    func testFinalSchemeCarriesTheEncodersOffset() throws {
        let info = TensorInfo(name: "w", dtype: .f32, shape: [37, 129])
        let values = (0..<info.elementCount).map { Float(sin(Double($0) * 0.37)) * Float($0 % 7 + 1) }
        let source = ArraySource(info: info, values: values)
        let context = EncodingContext(threads: 2, allowNonfinite: false)
        for mean in [DoubleQuantization.Mean.float64, .torchFloat32] {
            let encoder = FourBitEncoder(format: .fp4, blockSize: 64, doubleQuant: true, mean: mean)
            let scheme = try XCTUnwrap(encoder.finalScheme(for: { source }, as: info, context: context))
            let absmax = UnsafeMutableBufferPointer<Float>.allocate(capacity: (info.elementCount + 63) / 64)
            defer { absmax.deallocate() }
            Blockwise4Bit.absmax(values, count: values.count, blockSize: 64, into: absmax.baseAddress!)
            let expected = DoubleQuantization.quantize(absmax: UnsafeBufferPointer(absmax), mean: mean).offset
            XCTAssertEqual(scheme, .fourBit(FourBitParameters(format: .fp4, blockSize: 64, blockScales: .doubleQuantized(offset: expected))))
        }
        XCTAssertEqual(try Int8Encoder(outliers: .none).finalScheme(for: { source }, as: info, context: context),
                       .int8(Int8Parameters(outlierRule: .none, outlierColumnCount: 0, outlierThreshold: nil)))
        XCTAssertNil(try Int8Encoder(outliers: .default).finalScheme(for: { source }, as: info, context: context))
    }
}

/// Float32 values in memory as a tensor source.
private struct ArraySource: FloatTensorSource {
    let info: TensorInfo
    let values: [Float]
    var alignment: Int { 1 }
    func scratchBytes(for count: Int) -> Int { 0 }
    func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        for (i, j) in range.enumerated() { destination[i] = values[j] }
    }
}
