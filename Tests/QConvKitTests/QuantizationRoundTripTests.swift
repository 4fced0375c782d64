import QConvKit
import QConvTestSupport
import XCTest

/// `dequant(quant(W))` as a source (what `merge-lora --through` merges into)
/// equals what bitsandbytes stored for W, decoded and rounded to W's dtype as
/// its `dequantize_4bit` returns it.
final class QuantizationRoundTripTests: XCTestCase {
    func testTheRoundTripOfABaseIsWhatBitsandbytesStoredForIt() throws {
        let base = try Model.open(Fixtures.path("hf_bnb/base_f16"))
        let quantized = try Model.open(Fixtures.path("hf_bnb/nf4_dq_f16"))
        let weights = quantized.tensors.filter(\.scheme.isQuantized)
        XCTAssertEqual(weights.count, 14)
        for stored in weights {
            let source = try XCTUnwrap(base.tensor(named: stored.name))
            let roundTrip = try QuantizationRoundTrip(try source.values(), quantization: .fourBit(.nf4, blockSize: 64, doubleQuant: true),
                                                      mean: .torchFloat32, threads: 2)
            XCTAssertEqual(try readFloats(DTypeRoundedSource(roundTrip, through: .f16)).map(\.bitPattern),
                           try readFloats(DTypeRoundedSource(try stored.values(), through: .f16)).map(\.bitPattern), stored.name)
        }
    }
}
