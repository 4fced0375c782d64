import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// `qconv merge-lora` against the weights PEFT 0.21.2's merge_and_unload() wrote.
final class MergeLoRACLITests: XCTestCase {
    /// The reference cases from shared/refdata and the extra low-precision ones (see lora/peft_extra/generate.py).
    static let cases = [
        "lora_llama_basic", "lora_llama_bf16_base", "lora_llama_rslora_patterns",
        "lora_llama_embedding_modules_to_save", "lora_gpt2_fan_in_fan_out_bias", "dora_llama",
        "peft_extra/f16base_f16ad", "peft_extra/bf16base_bf16ad", "peft_extra/emb_bf16base",
        "peft_extra/dora_bf16base", "peft_extra/gpt2_lorabias_f16",
    ]

    private func casePath(_ name: String, _ part: String) -> String { Fixtures.path("lora/\(name)/\(part)") }

    private func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runQConv(["merge-lora"] + arguments)
        XCTAssertEqual(result.status, 0, result.stderr, file: file, line: line)
        return result
    }

    // MARK: - Agreement with PEFT

    /// How closely a merged file agrees with PEFT's.
    struct Agreement {
        var worstF32RelativeError = 0.0
        var differing16 = 0
        var compared16 = 0
        var maxULP = 0
    }

    /// Checks names, dtypes, shapes and metadata, and measures the values:
    /// F32 relative to each tensor's absmax, F16/BF16 in units in the last place.
    private func compare(_ output: String, _ reference: String, file: StaticString = #filePath, line: UInt = #line) throws -> Agreement {
        let ours = try SafeTensorsFile(path: output), theirs = try SafeTensorsFile(path: reference)
        XCTAssertEqual(ours.tensors.map(\.name).sorted(), theirs.tensors.map(\.name).sorted(), file: file, line: line)
        XCTAssertEqual(ours.header.metadata?.map(\.key), theirs.header.metadata?.map(\.key), file: file, line: line)
        XCTAssertEqual(ours.header.metadata?.map(\.value), theirs.header.metadata?.map(\.value), file: file, line: line)
        var agreement = Agreement()
        for expected in theirs.tensors {
            guard let actual = ours.entry(named: expected.name) else { continue }
            XCTAssertEqual(actual.info.dtype, expected.info.dtype, expected.name, file: file, line: line)
            XCTAssertEqual(actual.info.shape, expected.info.shape, expected.name, file: file, line: line)
            let a = try ours.bytes(of: actual), b = try theirs.bytes(of: expected)
            guard a.count == b.count else { continue }
            switch expected.info.dtype {
            case .f32:
                let x = floats(a), y = floats(b)
                let absmax = y.reduce(Float(0)) { max($0, abs($1)) }
                let worst = zip(x, y).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
                let relative = absmax > 0 ? Double(worst / absmax) : Double(worst)
                XCTAssertLessThanOrEqual(relative, 1e-6, expected.name, file: file, line: line)
                agreement.worstF32RelativeError = max(agreement.worstF32RelativeError, relative)
            case .f16, .bf16:
                for (p, q) in zip(halves(a), halves(b)) where p != q {
                    agreement.differing16 += 1
                    agreement.maxULP = max(agreement.maxULP, abs(ordered(p) - ordered(q)))
                }
                agreement.compared16 += a.count / 2
            default:
                XCTAssertEqual(a, b, expected.name, file: file, line: line)
            }
        }
        XCTAssertLessThanOrEqual(agreement.maxULP, 1, "no element more than one ulp away", file: file, line: line)
        XCTAssertLessThanOrEqual(Double(agreement.differing16), 0.001 * Double(agreement.compared16), "at least 99.9% bit-identical", file: file, line: line)
        return agreement
    }

    private func floats(_ bytes: [UInt8]) -> [Float] {
        bytes.withUnsafeBytes { raw in (0..<(bytes.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
    }

    private func halves(_ bytes: [UInt8]) -> [UInt16] {
        bytes.withUnsafeBytes { raw in (0..<(bytes.count / 2)).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) } }
    }

    /// 16-bit float patterns on one integer line, so neighbours differ by one across zero too.
    private func ordered(_ bits: UInt16) -> Int {
        bits & 0x8000 != 0 ? -Int(bits & 0x7FFF) : Int(bits)
    }

    func testEveryCaseMatchesPEFT() throws {
        for name in Self.cases {
            let folder = TemporaryDirectory("qconv-merge-lora")
            let out = folder.file("out")
            try run([casePath(name, "base"), casePath(name, "adapter"), out, "--quiet"])
            let merged = out + "/model.safetensors"
            let agreement = try compare(merged, casePath(name, "merged/model.safetensors"))
            print("merge-lora \(name): worst F32 relative error \(agreement.worstF32RelativeError), "
                  + "F16/BF16 differing \(agreement.differing16) of \(agreement.compared16) (max \(agreement.maxULP) ulp)")
            XCTAssertEqual(FileManager.default.contents(atPath: out + "/config.json"),
                           FileManager.default.contents(atPath: casePath(name, "base/config.json")), "\(name): config.json copied")

            // A file for a file, with the same bytes.
            let single = folder.file("single.safetensors")
            try run([casePath(name, "base/model.safetensors"), casePath(name, "adapter"), single, "--quiet", "--threads", "1"])
            XCTAssertEqual(FileManager.default.contents(atPath: single), FileManager.default.contents(atPath: merged), name)
        }
    }

    // MARK: - Crafted inputs

    /// Writes `source`'s tensors to `destination` with new names or shapes
    /// (same byte counts) and the same data: a rewritten header.
    private func rewriteHeader(_ source: String, to destination: String, _ transform: (TensorInfo) -> TensorInfo) throws {
        let file = try SafeTensorsFile(path: source)
        let infos = file.tensors.map { transform($0.info) }
        let writer = try CheckpointWriter(destination: destination, layout: .file, tensors: infos, metadata: file.header.metadata, overwrite: true, inputs: [source])
        for entry in file.tensors { try file.bytes(of: entry).withUnsafeBytes { try writer.write($0) } }
        try writer.commit()
    }

    /// A copy of a case's adapter folder whose safetensors header is rewritten.
    private func craftAdapter(_ name: String, in folder: TemporaryDirectory, _ transform: (TensorInfo) -> TensorInfo) throws -> String {
        let path = folder.file("adapter")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: casePath(name, "adapter/adapter_config.json"), toPath: path + "/adapter_config.json")
        try rewriteHeader(casePath(name, "adapter/adapter_model.safetensors"), to: path + "/adapter_model.safetensors", transform)
        return path
    }

    func testMisShapedAdapterIsRefusedAndNothingIsWritten() throws {
        let folder = TemporaryDirectory("qconv-merge-lora")
        let bad = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
        let adapter = try craftAdapter("lora_llama_basic", in: folder) { info in
            info.name == bad ? TensorInfo(name: info.name, dtype: info.dtype, shape: [16, 16]) : info
        }
        let out = folder.file("out")
        let result = try runQConv(["merge-lora", casePath("lora_llama_basic", "base"), adapter, out])
        XCTAssertEqual(result.status, 3, result.stderr)
        XCTAssertTrue(result.stderr.contains(bad) && result.stderr.contains("lora_B is [out, r]"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(folder.contents(), ["adapter"], "no temporary output left behind")

        let dryRun = try runQConv(["merge-lora", casePath("lora_llama_basic", "base"), adapter, "--dry-run"])
        XCTAssertEqual(dryRun.status, 3, "a dry run checks the fit too")
    }

    func testAdapterForADifferentlyWrappedModel() throws {
        // Keys as an adapter trained on LlamaModel stores them: without the base's "model.".
        let folder = TemporaryDirectory("qconv-merge-lora")
        let adapter = try craftAdapter("lora_llama_basic", in: folder) { info in
            TensorInfo(name: info.name.replacingOccurrences(of: "base_model.model.model.", with: "base_model.model."), dtype: info.dtype, shape: info.shape)
        }
        let result = try run([casePath("lora_llama_basic", "base"), adapter, folder.file("out"), "--json"])
        let report = try XCTUnwrap(JSONParser.parse(result.stdout).objectValue)
        XCTAssertEqual(report["mapping"]?.objectValue?["added_prefix"]?.stringValue, "model.")
        XCTAssertEqual(report["tensors_changed"]?.numberValue?.intValue, 4)
        _ = try compare(folder.file("out/model.safetensors"), casePath("lora_llama_basic", "merged/model.safetensors"))
    }

    func testShardedBaseKeepsItsLayout() throws {
        // The basic case's base split into shards as transformers would.
        let folder = TemporaryDirectory("qconv-merge-lora")
        let source = try Checkpoint(path: casePath("lora_llama_basic", "base"))
        let base = folder.file("base")
        let shards = CheckpointWriter.planShards(source.tensors.map(\.info), maximumBytes: 100_000)
        XCTAssertGreaterThan(shards.count, 2)
        let writer = try CheckpointWriter(destination: base, layout: .folder(shards: shards), tensors: source.tensors.map(\.info),
                                          metadata: source.metadata, auxiliaryFiles: [(casePath("lora_llama_basic", "base/config.json"), "config.json")],
                                          overwrite: false, inputs: [])
        for tensor in source.tensors { try tensor.stored.allBytes().withUnsafeBytes { try writer.write($0) } }
        try writer.commit()

        let out = folder.file("out")
        try run([base, casePath("lora_llama_basic", "adapter"), out, "--quiet"])
        let input = try Checkpoint(path: base), merged = try Checkpoint(path: out)
        XCTAssertEqual(merged.layout, .shardedFolder)
        XCTAssertEqual(merged.shards.map { FileSystem.baseName(of: $0.path) }, input.shards.map { FileSystem.baseName(of: $0.path) })
        XCTAssertEqual(merged.shards.map { $0.tensors.map(\.name) }, input.shards.map { $0.tensors.map(\.name) })
        XCTAssertEqual(merged.index?["weight_map"], input.index?["weight_map"])
        XCTAssertEqual(merged.auxiliaryFiles, ["config.json"])
        // The same arithmetic as the single-file merge, byte for byte.
        let single = folder.file("single.safetensors")
        try run([casePath("lora_llama_basic", "base/model.safetensors"), casePath("lora_llama_basic", "adapter"), single, "--quiet"])
        let reference = try SafeTensorsFile(path: single)
        for tensor in merged.tensors {
            let expected = try XCTUnwrap(reference.entry(named: tensor.name))
            XCTAssertEqual(try tensor.stored.allBytes(), try reference.bytes(of: expected), tensor.name)
        }
    }

    func testDryRunListsTheTensorsAndJSONIsValid() throws {
        let base = casePath("lora_llama_rslora_patterns", "base"), adapter = casePath("lora_llama_rslora_patterns", "adapter")
        let text = try run([base, adapter, "--dry-run"])
        XCTAssertTrue(text.stdout.contains("dry run: 14 tensors would change, 7 would be copied"), text.stdout)
        XCTAssertTrue(text.stdout.contains("model.layers.1.mlp.down_proj.weight"), text.stdout)

        let json = try run([base, adapter, "--dry-run", "--json"])
        let report = try XCTUnwrap(JSONParser.parse(json.stdout).objectValue)
        XCTAssertEqual(report["dry_run"], .bool(true))
        XCTAssertEqual(report["output"], .null)
        let changes = try XCTUnwrap(report["changes"]?.arrayValue?.compactMap(\.objectValue))
        XCTAssertEqual(changes.count, 14)
        let down = try XCTUnwrap(changes.first { $0["name"]?.stringValue == "model.layers.1.mlp.down_proj.weight" })
        XCTAssertEqual(down["rank"]?.numberValue?.intValue, 2)
        XCTAssertEqual(down["scale"]?.numberValue?.doubleValue ?? 0, 32 / 2.0.squareRoot(), accuracy: 1e-12)
        let o = try XCTUnwrap(changes.first { $0["name"]?.stringValue == "model.layers.0.self_attn.o_proj.weight" })
        XCTAssertEqual(o["alpha"]?.numberValue?.doubleValue, 8)

        let folder = TemporaryDirectory("qconv-merge-lora")
        let merged = try run([base, adapter, folder.file("out"), "--json"])
        let summary = try XCTUnwrap(JSONParser.parse(merged.stdout).objectValue)
        XCTAssertEqual(summary["output"]?.stringValue, folder.file("out"))
        XCTAssertEqual(summary["tensors_changed"]?.numberValue?.intValue, 14)
        XCTAssertEqual(summary["mapping"]?.objectValue?["description"]?.stringValue, "identity (base_model.model. removed)")
    }

    func testOutputRulesAndScale() throws {
        let folder = TemporaryDirectory("qconv-merge-lora")
        let base = casePath("lora_llama_basic", "base"), adapter = casePath("lora_llama_basic", "adapter")
        let out = folder.file("out")
        try run([base, adapter, out, "--quiet", "--scale", "0"])
        // Scale 0 adds zero deltas: the values are the base's.
        let merged = try Checkpoint(path: out), original = try Checkpoint(path: base)
        for tensor in original.tensors {
            XCTAssertEqual(try merged.tensor(named: tensor.name)?.stored.allFloats(), try tensor.stored.allFloats(), tensor.name)
        }
        let again = try runQConv(["merge-lora", base, adapter, out])
        XCTAssertEqual(again.status, 2, "an existing output needs --force")
        try run([base, adapter, out, "--force", "--quiet"])
        _ = try compare(out + "/model.safetensors", casePath("lora_llama_basic", "merged/model.safetensors"))

        let missing = try runQConv(["merge-lora", base, adapter])
        XCTAssertEqual(missing.status, 2, missing.stderr)
        let notAdapter = try runQConv(["merge-lora", base, base, folder.file("x")])
        XCTAssertEqual(notAdapter.status, 3, notAdapter.stderr)
        XCTAssertTrue(notAdapter.stderr.contains("adapter_config.json"), notAdapter.stderr)
    }
}
