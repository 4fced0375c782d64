import Foundation
import QConvTestSupport
import XCTest
@testable import QConvKit

/// `TorchMean` against torch 2.15's float32 `mean()` (AVX2 kernels, one
/// thread) of 43 vectors of lengths around every boundary of its cascade sum
/// (Tests/Fixtures/foundation/torch_mean.json, made by torch_mean_generate.py).
final class TorchMeanTests: XCTestCase {
    /// The generator's values: a 64-bit LCG, the top 24 bits as a float in [0, 1).
    static func values(count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) * 0x1p-24
        }
    }

    func testMeansAreTorchsBitForBit() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("foundation/torch_mean.json")))
        let cases = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        XCTAssertEqual(cases.count, 43)
        var differFromFloat64 = 0
        for entry in cases {
            let n = try XCTUnwrap(entry["n"] as? Int), seed = try XCTUnwrap(entry["seed"] as? Int)
            let expected = Float(bitPattern: UInt32(try XCTUnwrap(entry["mean_bits"] as? Int)))
            let values = Self.values(count: n, seed: UInt64(seed))
            values.withUnsafeBufferPointer { buffer in
                XCTAssertEqual(TorchMean.mean(buffer).bitPattern, expected.bitPattern, "n = \(n)")
                XCTAssertEqual(DoubleQuantization.offset(absmax: buffer, mean: .torchFloat32).bitPattern, expected.bitPattern)
                if DoubleQuantization.offset(absmax: buffer, mean: .float64) != expected { differFromFloat64 += 1 }
            }
        }
        XCTAssertGreaterThan(differFromFloat64, 0, "the float64 mean is not torch's: these vectors tell them apart")
    }

    func testCeilLog2IsTorchs() {
        XCTAssertEqual([0, 1, 2, 3, 4, 5, 8, 9, 16, 17].map(TorchMean.ceilLog2), [1, 1, 1, 2, 2, 3, 3, 4, 4, 5])
        XCTAssertEqual(TorchMean.mean(UnsafeBufferPointer(start: nil, count: 0)), 0)
    }
}
