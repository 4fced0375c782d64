import Foundation
import QConvTestSupport
import XCTest
@testable import QConvKit

/// The text pieces of bitsandbytes checkpoints: Python's float repr, the
/// quant-state blob, the config, and the shard planner.
final class BitsandbytesFormatTests: XCTestCase {
    /// 3,033 Doubles (specials, random float32 and float64 bit patterns,
    /// absmax-like means) and `json.dumps` of each, from Python 3.11.
    func testFloatTextIsPythonsForEveryValue() throws {
        let text = try String(contentsOfFile: Fixtures.path("foundation/python_float_repr.txt"), encoding: .utf8)
        var checked = 0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ", maxSplits: 1)
            let value = Double(bitPattern: try XCTUnwrap(UInt64(fields[0], radix: 16)))
            XCTAssertEqual(PythonFloat.text(value), String(fields[1]), "bits \(fields[0])")
            checked += 1
        }
        XCTAssertEqual(checked, 3033)
        XCTAssertEqual(PythonFloat.text(Double(Float(0.49042320251464844))), "0.49042320251464844")
        XCTAssertEqual(PythonFloat.text(1e-5), "1e-05")
        XCTAssertEqual(PythonFloat.text(1e16), "1e+16")
        XCTAssertEqual(PythonFloat.text(6), "6.0")
    }

    func testQuantStateIsPythonsJSONAndReadsBack() throws {
        let state = BitsandbytesQuantState(format: .nf4, blockSize: 64, dtype: .f16, shape: [64, 176], nestedOffset: 0.3326228857040405)
        XCTAssertEqual(state.json, #"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [64, 176], "nested_blocksize": 256, "#
                       + #""nested_dtype": "float32", "nested_offset": 0.3326228857040405}"#)
        XCTAssertEqual(try BitsandbytesQuantState.parse(Array(state.json.utf8)).get(), state)
        let plain = BitsandbytesQuantState(format: .fp4, blockSize: 128, dtype: .bf16, shape: [3], nestedOffset: nil)
        XCTAssertEqual(plain.json, #"{"quant_type": "fp4", "blocksize": 128, "dtype": "bfloat16", "shape": [3]}"#)
        XCTAssertEqual(try BitsandbytesQuantState.parse(Array(plain.json.utf8)).get(), plain)
        let refused: [(String, String)] = [
            ("{", "not valid JSON"),
            ("[]", "not a JSON object"),
            (#"{"quant_type": "nf8", "blocksize": 64, "dtype": "float16", "shape": [1]}"#, "quant_type"),
            (#"{"quant_type": "nf4", "blocksize": 48, "dtype": "float16", "shape": [1]}"#, "blocksize"),
            (#"{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [1]}"#, "dtype"),
            (#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": []}"#, "shape"),
            (#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [1], "extra": 1}"#, "\"extra\""),
            (#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [1], "nested_offset": 0.1}"#, "not all of"),
            (#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [1], "nested_blocksize": 128, "nested_dtype": "float32", "nested_offset": 0.1}"#,
             "nested_blocksize"),
        ]
        for (text, reason) in refused {
            guard case .failure(let problem) = BitsandbytesQuantState.parse(Array(text.utf8)) else { return XCTFail(text) }
            XCTAssertTrue(problem.reason.contains(reason), "\(text): \(problem.reason)")
        }
    }

    /// The config transformers writes: the source's keys and quantization_config, sorted, Python's layout.
    func testConfigIsTransformers() throws {
        let base = try Array(Data(contentsOf: URL(fileURLWithPath: Fixtures.path("hf_bnb/base_bf16/config.json"))))
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: Fixtures.path("hf_bnb/nf4_dq_bf16/config.json"))))
        let config = BitsandbytesConfig(mode: .fourBit(.nf4, doubleQuant: true), computeDType: .bf16)
        XCTAssertEqual(try config.configFile(from: base, path: "config.json"), expected)
        XCTAssertEqual(try config.configFile(from: expected, path: "config.json"), expected, "an existing quantization_config is replaced")
        XCTAssertEqual(try BitsandbytesConfig.configWithoutQuantization(expected, path: "config.json"), base)
        let odd = Array(#"{"b": [1e-6, 2.50, {"x": 1, "x": 2}], "a": "\u00e9"}"#.utf8)
        let written = String(decoding: try config.configFile(from: odd, path: "c"), as: UTF8.self)
        XCTAssertTrue(written.hasPrefix("{\n  \"a\": \"\\u00e9\",\n  \"b\": [\n    1e-06,\n    2.5,\n    {\n      \"x\": 2\n    }\n  ],\n"), written)
        XCTAssertThrowsError(try config.configFile(from: Array("[1]".utf8), path: "c"))
    }

    /// huggingface_hub's rule: an item larger than the limit is a shard of its own at once.
    func testShardGroupsFollowHuggingFaceHub() {
        XCTAssertEqual(TransformersSharding.groups([30, 30, 30], maximumBytes: 60), [[0, 1], [2]])
        XCTAssertEqual(TransformersSharding.groups([10, 100, 10, 60], maximumBytes: 60), [[1], [0, 2], [3]])
        XCTAssertEqual(TransformersSharding.groups([], maximumBytes: 60), [[]])
        XCTAssertEqual(TransformersSharding.fileNames(count: 1), ["model.safetensors"])
        XCTAssertEqual(TransformersSharding.fileNames(count: 2), ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    }

    /// Which linear layers stay raw decides llm_int8_skip_modules.
    func testSkipModulesNameTheLinearLayersKeptRaw() throws {
        let nf4 = TensorScheme.fourBit(FourBitParameters(format: .nf4, blockSize: 64, blockScales: .float32))
        func tensor(_ name: String, _ shape: [Int] = [64, 64]) -> TensorInfo { TensorInfo(name: name, dtype: .f16, shape: shape) }
        let base: [(info: TensorInfo, scheme: TensorScheme)] = [
            (tensor("model.embed_tokens.weight"), .raw), (tensor("model.norm.weight", [64]), .raw), (tensor("a.q_proj.weight"), nf4),
        ]
        XCTAssertNil(BitsandbytesPlan.skipModules(base + [(tensor("lm_head.weight"), .raw)]))
        XCTAssertEqual(BitsandbytesPlan.skipModules(base + [(tensor("lm_head.weight"), nf4)]), [])
        XCTAssertEqual(BitsandbytesPlan.skipModules(base + [(tensor("lm_head.weight"), .raw), (tensor("a.v_proj.weight"), .raw)]),
                       ["a.v_proj", "lm_head"])
        XCTAssertThrowsError(try BitsandbytesPlan.unit(tensor("model.embed_tokens.weight"), nf4, source: "s")) {
            XCTAssertEqual(($0 as? BitsandbytesError)?.rule, "not_a_linear_weight")
        }
        XCTAssertThrowsError(try BitsandbytesPlan.unit(tensor("a.q_proj.bias"), nf4, source: "s"))
        let outliers = TensorScheme.int8(Int8Parameters(outlierRule: .default, outlierColumnCount: 2, outlierThreshold: 0.1))
        XCTAssertThrowsError(try BitsandbytesPlan.unit(tensor("a.q_proj.weight"), outliers, source: "s")) {
            XCTAssertEqual(($0 as? BitsandbytesError)?.rule, "no_bitsandbytes_form")
        }
        XCTAssertThrowsError(try BitsandbytesPlan.mode([(tensor("a.weight"), nf4), (tensor("b.weight"), .int8(Int8Parameters(outlierRule: .none,
            outlierColumnCount: 0, outlierThreshold: nil)))]))
    }
}
