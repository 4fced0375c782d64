import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// FP8: every code decoded as torch decodes it, and scaled FP8 checkpoints
/// read as their scaled values, against the references torch wrote.
final class FP8Tests: XCTestCase {
    static func fixture(_ name: String) -> String { Fixtures.path("fp8/" + name) }

    /// All 256 codes of each format, bit for bit torch's float32 (NaNs included), scalar and bulk.
    func testEveryCodeDecodesAsTorchDecodesIt() throws {
        let file = try SafeTensorsFile(path: Self.fixture("codes.safetensors"))
        for (codesName, dtype) in [("e4m3", DType.f8e4m3), ("e5m2", DType.f8e5m2)] {
            let codes = try file.bytes(of: XCTUnwrap(file.entry(named: codesName)))
            let expected = try file.bytes(of: XCTUnwrap(file.entry(named: codesName + "_f32"))).withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
            var bulk = [Float](repeating: 0, count: 256)
            codes.withUnsafeBytes { raw in bulk.withUnsafeMutableBufferPointer { FloatConversion.decode(raw.baseAddress!, dtype: dtype, count: 256, into: $0.baseAddress!) } }
            for code in 0..<256 {
                let scalar = dtype == .f8e4m3 ? FloatConversion.float(fromE4M3: UInt8(code)) : FloatConversion.float(fromE5M2: UInt8(code))
                XCTAssertEqual(scalar.bitPattern, expected[code], "\(codesName) code \(code)")
                XCTAssertEqual(bulk[code].bitPattern, expected[code], "\(codesName) code \(code), bulk")
            }
        }
        XCTAssertTrue(DType.f8e4m3.isDecodableToFloat && DType.f8e5m2.isDecodableToFloat)
        for dtype in [DType.f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .f4, .f6e2m3, .f6e3m2] { XCTAssertFalse(dtype.isDecodableToFloat, dtype.rawValue) }
    }

    /// Unscaled FP8 tensors are raw tensors whose values are torch's `.float()`.
    func testPlainFP8TensorsAreTheirValues() throws {
        let model = try Model.open(Self.fixture("plain/model.safetensors")), reference = try Model.open(Self.fixture("plain/reference_f32.safetensors"))
        XCTAssertEqual(model.tensors.map(\.name).sorted(), reference.tensors.map(\.name).sorted())
        XCTAssertFalse(model.tensors.isEmpty)
        for tensor in model.tensors {
            XCTAssertEqual(tensor.scheme, .raw)
            XCTAssertEqual(try floatBits(tensor), try reference.tensor(named: tensor.name).map { try floatBits($0) }, tensor.name)
        }
    }

    /// Block-scaled and per-channel weights: one tensor each, in the config's dtype, scale tensors gone,
    /// values that round to the reference's BF16, config.json without its quantization_config.
    func testScaledCheckpointsReadAsScaledValues() throws {
        for (folder, granularity, suffix) in [("block_scaled", ScaledFP8Parameters.Granularity.block(rows: 128, columns: 128), "_scale_inv"),
                                              ("per_channel", .channel, "_scale")] {
            let model = try Model.open(Self.fixture(folder))
            let reference = try Model.open(Self.fixture(folder + "/reference_bf16.safetensors"))
            XCTAssertEqual(Set(model.tensors.map(\.name)), Set(reference.tensors.map(\.name)), folder)
            var scaled = 0
            for tensor in model.tensors {
                let expected = try XCTUnwrap(reference.tensor(named: tensor.name))
                XCTAssertEqual(tensor.info, expected.info)
                if case .scaledFP8(let p) = tensor.scheme {
                    scaled += 1
                    XCTAssertEqual(p.granularity, granularity)
                    XCTAssertEqual(p.scaleName, tensor.name + suffix)
                }
                let rounded = try floatBits(tensor).map { UInt32(FloatConversion.bfloat16Bits(from: Float(bitPattern: $0))) << 16 }
                XCTAssertEqual(rounded, try floatBits(expected), "\(folder) \(tensor.name)")
            }
            XCTAssertGreaterThan(scaled, 0, "\(folder): weights read as scaled FP8")
            let config = try XCTUnwrap(model.sideFiles.first { $0.name == "config.json" })
            let json = try JSONSerialization.jsonObject(with: Data(try config.readAll())) as! [String: Any]
            XCTAssertNil(json["quantization_config"])
            XCTAssertEqual(json["torch_dtype"] as? String, "bfloat16")
            XCTAssertEqual(model.files[0].tensorCount, model.tensors.count)
        }
        // The .bin of the block-scaled tensors pairs the same way.
        let bin = try Model.open(Fixtures.path("torch_bin/fp8_block"))
        XCTAssertEqual(bin.tensors.filter { $0.scheme.name == "fp8" }.count, 3)
    }

    /// A per-tensor scale, an F16 model dtype, and the kernel against a plain loop over odd blocks.
    func testScalesApplyPerTensorPerRowAndPerBlock() throws {
        let directory = TemporaryDirectory()
        let (rows, columns) = (300, 260)
        let codes = (0..<(rows * columns)).map { UInt8(truncatingIfNeeded: $0 * 37 % 251) & 0x77 }
        let blockScales = (0..<9).map { Float($0 + 1) * 0.25 }, rowScales = (0..<rows).map { Float($0 % 7 + 1) * 0.5 }
        func write(_ scaleShape: [Int], _ scales: [Float], config: String?) throws -> Model {
            let folder = directory.file("m\(scaleShape.count)-\(scales.count)-\(config?.count ?? 0)")
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let scaleBytes = scales.withUnsafeBytes { Array($0) }
            let header = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[\(rows),\(columns)],\"data_offsets\":[0,\(codes.count)]},"
                + "\"w_scale\":{\"dtype\":\"F32\",\"shape\":\(scaleShape),\"data_offsets\":[\(codes.count),\(codes.count + scaleBytes.count)]}}"
            writeFile(folder + "/model.safetensors", craftSafetensors(header: header, data: codes + scaleBytes))
            if let config { writeFile(folder + "/config.json", Array(config.utf8)) }
            return try Model.open(folder)
        }
        func expected(_ scale: (Int, Int) -> Float) -> [UInt32] {
            (0..<(rows * columns)).map { (FloatConversion.float(fromE4M3: codes[$0]) * scale($0 / columns, $0 % columns)).bitPattern }
        }
        let perTensor = try write([], [0.75], config: "{\"torch_dtype\": \"float16\"}")
        XCTAssertEqual(perTensor.tensors.map(\.info.dtype), [.f16])
        XCTAssertEqual(try floatBits(perTensor.tensors[0]), expected { _, _ in 0.75 })
        let perRow = try write([rows, 1], rowScales, config: nil)
        XCTAssertEqual(try floatBits(perRow.tensors[0]), expected { r, _ in rowScales[r] })
        let blocks = try write([3, 3], blockScales, config: "{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}")
        XCTAssertEqual(try floatBits(blocks.tensors[0]), expected { r, c in blockScales[(r / 128) * 3 + c / 128] })
        // Ranges that start and end inside rows and blocks.
        let values = try blocks.tensors[0].values()
        let all = expected { r, c in blockScales[(r / 128) * 3 + c / 128] }
        for range in [5..<6, 127..<131, 259..<521, 33_280..<40_000, 77_999..<78_000] {
            let out = try readFloats(values, range)
            XCTAssertEqual(out.map(\.bitPattern), Array(all[range]), "\(range)")
        }
        // Scales that fit no layout, and a block size that is not one.
        XCTAssertThrowsError(try write([7], (0..<7).map(Float.init), config: nil)) { error in
            guard case .scaleShapeMismatch(_, "w", "w_scale", "[7]", _)? = error as? ScaledFP8Error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try write([3, 3], blockScales, config: "{\"quantization_config\": {\"weight_block_size\": [128, \"x\"]}}")) { error in
            guard case .invalidBlockSize? = error as? ScaledFP8Error else { return XCTFail("\(error)") }
        }
    }

}
