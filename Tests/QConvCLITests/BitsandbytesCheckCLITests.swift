import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// A safetensors file as an editable list of tensors (for crafting broken checkpoints).
private struct EditableSafetensors {
    var entries: [(name: String, dtype: String, shape: [Int], data: [UInt8])] = []
    var metadata: [String: String]? = ["format": "pt"]

    init(path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let length = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + length)])) as! [String: Any]
        metadata = header["__metadata__"] as? [String: String]
        for (name, value) in header where name != "__metadata__" {
            let entry = value as! [String: Any], offsets = entry["data_offsets"] as! [Int]
            entries.append((name, entry["dtype"] as! String, entry["shape"] as! [Int], Array(bytes[(8 + length + offsets[0])..<(8 + length + offsets[1])])))
        }
        entries.sort { $0.name < $1.name }
    }

    func write(to path: String) throws {
        var header: [String: Any] = [:]
        if let metadata { header["__metadata__"] = metadata }
        var data: [UInt8] = []
        for entry in entries {
            header[entry.name] = ["dtype": entry.dtype, "shape": entry.shape, "data_offsets": [data.count, data.count + entry.data.count]]
            data += entry.data
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        json += [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8)
        writeFile(path, craftSafetensors(headerBytes: json, data: data))
    }

    func data(_ name: String) -> [UInt8] { entries.first { $0.name == name }!.data }

    mutating func remove(_ name: String) -> (name: String, dtype: String, shape: [Int], data: [UInt8]) {
        entries.remove(at: entries.firstIndex { $0.name == name }!)
    }

    mutating func set(_ name: String, _ dtype: String, _ shape: [Int], _ data: [UInt8]) {
        entries.removeAll { $0.name == name }
        entries.append((name, dtype, shape, data))
    }
}

/// `qconv verify BNB`: one crafted broken checkpoint per rule, each problem
/// one error line naming the weight, exit 3; a checkpoint that loads, exit 0.
final class BitsandbytesCheckCLITests: XCTestCase {
    static let weight = "model.layers.0.mlp.down_proj.weight"
    static let module = "model.layers.0.mlp.down_proj"

    /// A copy of a fixture folder, its model.safetensors edited by `edit`, its config.json by `config`.
    private func crafted(_ fixture: String, in directory: TemporaryDirectory, edit: (inout EditableSafetensors) -> Void = { _ in },
                         config: ((inout [String: Any]) -> Void)? = nil) throws -> String {
        let folder = directory.file(fixture.replacingOccurrences(of: "/", with: "_") + "-\(UUID().uuidString.prefix(6))")
        try FileManager.default.copyItem(atPath: Fixtures.path(fixture), toPath: folder)
        var file = try EditableSafetensors(path: folder + "/model.safetensors")
        edit(&file)
        try file.write(to: folder + "/model.safetensors")
        if let config {
            var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/config.json"))) as! [String: Any]
            config(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: folder + "/config.json"))
        }
        return folder
    }

    /// Runs verify and checks: exit 3, one error line per problem, the expected rule on the expected weight.
    private func expectBroken(_ path: String, rule: String, weight: String, saying text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try runQConv(["verify", path])
        XCTAssertEqual(result.status, 3, "\(rule): \(result.stdout)\(result.stderr)", file: file, line: line)
        let lines = result.stderr.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.allSatisfy { $0.hasPrefix("qconv: error: ") }, result.stderr, file: file, line: line)
        XCTAssertTrue(lines.contains { $0.contains("weight '\(weight)'") && $0.contains(text) }, "\(rule): \(result.stderr)", file: file, line: line)
        let json = try runQConv(["verify", path, "--json"])
        XCTAssertEqual(json.status, 3, file: file, line: line)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], file: file, line: line)
        XCTAssertEqual(report["ok"] as? Bool, false, file: file, line: line)
        let problems = try XCTUnwrap(report["problems"] as? [[String: Any]], file: file, line: line)
        XCTAssertEqual(problems.count, lines.count, file: file, line: line)
        XCTAssertTrue(problems.contains { $0["rule"] as? String == rule && $0["weight"] as? String == weight }, "\(problems)", file: file, line: line)
        // Every other command refuses it with the first problem.
        let inspect = try runQConv(["inspect", path])
        XCTAssertEqual(inspect.status, 3, file: file, line: line)
        XCTAssertEqual(inspect.stderr.split(separator: "\n").count, 1, inspect.stderr, file: file, line: line)
    }

    func testCheckpointsThatLoadPass() throws {
        for fixture in ["hf_bnb/nf4_dq_f16", "hf_bnb/fp4_bf16", "hf_bnb/int8_f16", "hf_bnb/nf4_dq_f16_sharded", "hf_bnb/nf4_dq_f16/model.safetensors"] {
            let result = try runQConv(["verify", Fixtures.path(fixture)])
            XCTAssertEqual(result.status, 0, "\(fixture): \(result.stderr)")
            XCTAssertTrue(result.stdout.contains(": ok: 21 tensors"), result.stdout)
        }
        let json = try runQConv(["verify", Fixtures.path("hf_bnb/nf4_dq_f16_sharded"), "--json"])
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["ok"] as? Bool, true)
        XCTAssertEqual(report["schemes"] as? [String: Int], ["nf4, block size 64, double quant": 14])
        XCTAssertEqual(report["shard_count"] as? Int, 3)
    }

    func testMissingPieces() throws {
        let directory = TemporaryDirectory()
        let w = Self.weight, m = Self.module
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { _ = $0.remove(w + ".quant_map") },
                         rule: "piece_missing", weight: w, saying: "'\(w).quant_map' is missing (the 4-bit code table)")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { _ = $0.remove(w + ".nested_absmax") },
                         rule: "piece_missing", weight: w, saying: "its quant state says double quantization")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { _ = $0.remove(w) },
                         rule: "piece_missing", weight: w, saying: "the packed 4-bit codes")
        try expectBroken(try crafted("hf_bnb/int8_f16", in: directory) { _ = $0.remove(m + ".SCB") },
                         rule: "piece_missing", weight: w, saying: "the row scales of an int8 weight")
        try expectBroken(try crafted("hf_bnb/int8_f16", in: directory) { _ = $0.remove(w) },
                         rule: "piece_missing", weight: w, saying: "the int8 codes")
    }

    func testUnexpectedPieces() throws {
        let directory = TemporaryDirectory()
        let w = Self.weight
        try expectBroken(try crafted("hf_bnb/fp4_f16", in: directory) { $0.set(w + ".nested_absmax", "F32", [1], [0, 0, 0, 0]) },
                         rule: "piece_unexpected", weight: w, saying: "its quant state has no nested_offset")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { $0.set("model.extra.weight.absmax", "F32", [1], [0, 0, 0, 0]) },
                         rule: "piece_unexpected", weight: "model.extra.weight", saying: "no quant state")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { file in
            file.set(w + ".quant_state.bitsandbytes__fp4", "U8", [2], Array("{}".utf8))
        }, rule: "piece_unexpected", weight: w, saying: "the weight has another quant state")
    }

    func testQuantStates() throws {
        let directory = TemporaryDirectory()
        let w = Self.weight, blob = w + ".quant_state.bitsandbytes__nf4"
        func replacingState(_ text: String) -> (inout EditableSafetensors) -> Void {
            { $0.set(blob, "U8", [text.utf8.count], Array(text.utf8)) }
        }
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, edit: replacingState("{not json")),
                         rule: "quant_state_invalid", weight: w, saying: "is not valid JSON")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, edit: replacingState(
            #"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [64, 176], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.3, "bias": 1}"#)),
            rule: "quant_state_invalid", weight: w, saying: "\"bias\"")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, edit: replacingState(
            #"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.3}"#)),
            rule: "quant_state_disagrees", weight: w, saying: "but its quant state (shape [64, 64], blocksize 64) needs U8 [2048, 1] or U8 [2048]")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, edit: replacingState(
            #"{"quant_type": "fp4", "blocksize": 64, "dtype": "float16", "shape": [64, 176], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.3}"#)),
            rule: "quant_state_disagrees", weight: w, saying: "says quant_type \"fp4\"")
    }

    func testPieceLayoutsAndContents() throws {
        let directory = TemporaryDirectory()
        let w = Self.weight, m = Self.module
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { $0.set(w + ".quant_map", "F16", [16], [UInt8](repeating: 0, count: 32)) },
                         rule: "piece_layout", weight: w, saying: "'\(w).quant_map' is F16 [16], expected F32 [16]")
        try expectBroken(try crafted("hf_bnb/int8_f16", in: directory) { $0.set(m + ".SCB", "F16", [64], [UInt8](repeating: 0, count: 128)) },
                         rule: "piece_layout", weight: w, saying: "expected F32 [64]")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory) { file in
            var table = file.data(w + ".quant_map")
            table[4] ^= 1
            file.set(w + ".quant_map", "F32", [16], table)
        }, rule: "piece_contents", weight: w, saying: "differs from bitsandbytes' nf4 table at entry 1")
        try expectBroken(try crafted("hf_bnb/int8_f16", in: directory) { $0.set(m + ".weight_format", "U8", [], [1]) },
                         rule: "piece_contents", weight: w, saying: "only 0 (row-major)")
    }

    /// The sharded save with one weight's absmax moved into another shard.
    func testPiecesSplitAcrossShards() throws {
        let directory = TemporaryDirectory()
        let folder = directory.file("sharded")
        try FileManager.default.copyItem(atPath: Fixtures.path("hf_bnb/nf4_dq_f16_sharded"), toPath: folder)
        let w = Self.weight, piece = w + ".absmax"
        var second = try EditableSafetensors(path: folder + "/model-00002-of-00003.safetensors")
        var third = try EditableSafetensors(path: folder + "/model-00003-of-00003.safetensors")
        let moved = second.remove(piece)
        third.set(moved.name, moved.dtype, moved.shape, moved.data)
        try second.write(to: folder + "/model-00002-of-00003.safetensors")
        try third.write(to: folder + "/model-00003-of-00003.safetensors")
        let indexPath = folder + "/model.safetensors.index.json"
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: indexPath))) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        map[piece] = "model-00003-of-00003.safetensors"
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: indexPath))
        try expectBroken(folder, rule: "pieces_in_several_shards", weight: w, saying: "split across shards model-00002-of-00003.safetensors, model-00003-of-00003.safetensors")

        // An index that does not match its shards is refused when the checkpoint is opened.
        map[piece] = "model-00001-of-00003.safetensors"
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: indexPath))
        let result = try runQConv(["verify", folder])
        XCTAssertEqual(result.status, 3)
        XCTAssertTrue(result.stderr.contains(piece), result.stderr)
    }

    func testConfigs() throws {
        let directory = TemporaryDirectory()
        let w = Self.weight
        func quantization(_ key: String, _ value: Any) -> (inout [String: Any]) -> Void {
            { config in
                var q = config["quantization_config"] as! [String: Any]
                q[key] = value
                config["quantization_config"] = q
            }
        }
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, config: quantization("bnb_4bit_quant_type", "fp4")),
                         rule: "config_disagrees", weight: w,
                         saying: "the weight is nf4 but quantization_config says bnb_4bit_quant_type \"fp4\" (and 13 other weights)")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, config: quantization("bnb_4bit_use_double_quant", false)),
                         rule: "config_disagrees", weight: w, saying: "double-quantized but quantization_config says bnb_4bit_use_double_quant false")
        try expectBroken(try crafted("hf_bnb/int8_f16", in: directory, config: quantization("load_in_8bit", false)),
                         rule: "config_disagrees", weight: w, saying: "does not set load_in_8bit")
        try expectBroken(try crafted("hf_bnb/nf4_dq_f16", in: directory, config: { $0["quantization_config"] = nil }),
                         rule: "config_disagrees", weight: w, saying: "config.json has no quantization_config")
        // config.json that is not JSON, or missing: reported without a weight.
        let broken = try crafted("hf_bnb/nf4_dq_f16", in: directory)
        try Data("{".utf8).write(to: URL(fileURLWithPath: broken + "/config.json"))
        let invalid = try runQConv(["verify", broken])
        XCTAssertEqual(invalid.status, 3)
        XCTAssertTrue(invalid.stderr.contains("config.json: not valid JSON"), invalid.stderr)
        try FileManager.default.removeItem(atPath: broken + "/config.json")
        let missing = try runQConv(["verify", broken])
        XCTAssertEqual(missing.status, 3)
        XCTAssertTrue(missing.stderr.contains("config.json: is missing"), missing.stderr)
    }
}
