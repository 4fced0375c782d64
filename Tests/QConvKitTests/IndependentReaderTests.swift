import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Reads containers following docs/FORMAT.md with Foundation only (no QConvKit
/// reader), and checks it decodes every tensor to exactly what qconv decodes.
/// If this test needs something FORMAT.md does not say, FORMAT.md is incomplete.
final class IndependentReaderTests: XCTestCase {
    static let nf4: [Float] = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                               -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                               0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                               0.7229568362236023, 1.0]
    static let fp4: [Float] = [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3].map { Float($0 / 12) }

    /// The dynamic map, parsed from the table in docs/FORMAT.md itself.
    static func dynamicMapFromFormatDocument() throws -> [Float] {
        let text = try String(contentsOfFile: Fixtures.repositoryRoot + "/docs/FORMAT.md", encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "eight per line:\n\n```\n"))
        let end = try XCTUnwrap(text.range(of: "```", range: start.upperBound..<text.endIndex))
        return text[start.upperBound..<end.lowerBound].split(whereSeparator: { $0 == " " || $0 == "\n" })
            .map { Float(bitPattern: UInt32($0, radix: 16)!) }
    }

    struct Part { let offset: Int; let length: Int }

    func decodeIndependently(_ path: String) throws -> [String: [Float]] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[0..<8]), Array("QCONVFMT".utf8))
        func u32(_ at: Int) -> UInt32 { bytes[at..<at + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ at: Int) -> UInt64 { bytes[at..<at + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        XCTAssertEqual(u32(8), 1)
        XCTAssertEqual(u32(12), 0)
        let headerLength = Int(u64(16))
        XCTAssertEqual((32 + headerLength) % 64, 0)
        let header = try JSONSerialization.jsonObject(with: Data(bytes[32..<32 + headerLength])) as! [String: Any]
        let dataStart = 32 + headerLength
        let dynamic = try Self.dynamicMapFromFormatDocument()
        XCTAssertEqual(dynamic.count, 256)

        func part(_ tensor: [String: Any], _ name: String) -> ArraySlice<UInt8> {
            let entry = (tensor["parts"] as! [[String: Any]]).first { $0["name"] as! String == name }!
            let offset = dataStart + (entry["offset"] as! Int)
            return bytes[offset..<offset + (entry["length"] as! Int)]
        }
        func floats(_ slice: ArraySlice<UInt8>) -> [Float] {
            stride(from: slice.startIndex, to: slice.endIndex, by: 4).map { i in
                Float(bitPattern: slice[i..<i + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) })
            }
        }
        func half(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

        var result: [String: [Float]] = [:]
        for tensor in header["tensors"] as! [[String: Any]] {
            let name = tensor["name"] as! String
            let shape = tensor["shape"] as! [Int]
            let n = shape.reduce(1, *)
            let params = tensor["params"] as! [String: Any]
            switch tensor["scheme"] as! String {
            case "raw":
                XCTAssertEqual(tensor["dtype"] as? String, "F32", "the samples are F32")
                result[name] = floats(part(tensor, "data"))
            case let scheme where scheme == "nf4" || scheme == "fp4":
                var code = scheme == "nf4" ? Self.nf4 : Self.fp4
                if scheme == "fp4" && (shape.last ?? 1) % 2 == 0 { code[8] = -0.0 }  // FORMAT.md: bitsandbytes' quirk
                let blockSize = params["block_size"] as! Int
                var absmax: [Float]
                if params["double_quant"] as! Bool {
                    let offset = Float(bitPattern: UInt32(params["offset_bits"] as! String, radix: 16)!)
                    let nested = floats(part(tensor, "nested_absmax"))
                    absmax = part(tensor, "absmax_codes").enumerated().map { b, q in dynamic[Int(q)] * nested[b / 256] + offset }
                } else {
                    absmax = floats(part(tensor, "absmax"))
                }
                let codes = Array(part(tensor, "codes"))
                result[name] = (0..<n).map { i in
                    let nibble = i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15
                    return code[Int(nibble)] * absmax[i / blockSize]
                }
            case "int8":
                let columns = shape.last ?? 1
                let k = params["outlier_column_count"] as! Int
                let codes = Array(part(tensor, "codes")).map { Int8(bitPattern: $0) }
                let scales = floats(part(tensor, "row_scales"))
                let outlierColumns = floats(part(tensor, "outlier_columns")).map { Int($0.bitPattern) }
                let valueBytes = Array(part(tensor, "outlier_values"))
                var values = (0..<n).map { i in Float(codes[i]) * scales[i / columns] * Float(0.007874015718698502) }
                for row in 0..<(n / columns) {
                    for (j, column) in outlierColumns.enumerated() {
                        let at = (row * k + j) * 2
                        values[row * columns + column] = half(UInt16(valueBytes[at]) | UInt16(valueBytes[at + 1]) << 8)
                    }
                }
                result[name] = values
            default:
                XCTFail("unknown scheme")
            }
        }
        return result
    }

    func check(_ method: QuantizationMethod) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.qc")
        _ = try Quantizer.convert(try Model.open(Fixtures.sample("sharded_llama")), to: path,
                                  options: Quantizer.Options(method: method, selection: try TensorSelection(), threads: 2))
        let independent = try decodeIndependently(path)
        let container = try Model.open(path)
        for tensor in container.tensors {
            let expected = try TensorStatisticsProbe.decode(TensorDecoder(tensor))
            let decoded = try XCTUnwrap(independent[tensor.name], tensor.name)
            XCTAssertEqual(decoded.count, expected.count, tensor.name)
            let differing = zip(decoded, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(method): \(tensor.name): \(differing) elements decode differently")
        }
    }

    func testNF4WithDoubleQuantization() throws { try check(.fourBit(.nf4, blockSize: 64, doubleQuant: true)) }
    func testFP4WithoutDoubleQuantization() throws { try check(.fourBit(.fp4, blockSize: 128, doubleQuant: false)) }
    func testInt8WithOutliers() throws { try check(.int8(outliers: .absolute(0.06))) }
}

/// Decodes a whole (small) tensor through QConvKit's reader, for comparison.
enum TensorStatisticsProbe {
    static func decode(_ source: FloatTensorSource) throws -> [Float] {
        try readFloats(source)
    }
}
