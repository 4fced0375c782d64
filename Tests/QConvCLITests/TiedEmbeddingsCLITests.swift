import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// merge-lora into a base with `"tie_word_embeddings": true` (interop/tied):
/// an adapter that changes either embedding unties the model; one that
/// changes neither leaves it as it was.
final class TiedEmbeddingsCLITests: XCTestCase {
    private let root = Fixtures.path("interop/tied")
    private let embed = "model.embed_tokens.weight", head = "lm_head.weight", query = "model.layers.0.self_attn.q_proj.weight"

    private func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
        let bytes = try file.bytes(of: XCTUnwrap(file.entry(named: name), name))
        return bytes.withUnsafeBytes { raw in (0..<(bytes.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
    }

    private func assertClose(_ a: [Float], _ b: [Float], _ message: String, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, line: line)
        let absmax = b.reduce(Float(0)) { max($0, abs($1)) }
        let worst = zip(a, b).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        XCTAssertLessThanOrEqual(worst, 1e-6 * absmax, message, line: line)
    }

    /// A copy of the adapter with only some of its tensors and another config.
    private func adapter(in folder: TemporaryDirectory, keeping keep: (String) -> Bool, config: (String) -> String,
                         adding extra: [(String, [Int], Float)] = []) throws -> String {
        let path = folder.file("adapter")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let text = try String(contentsOfFile: root + "/adapter/adapter_config.json", encoding: .utf8)
        try config(text).write(toFile: path + "/adapter_config.json", atomically: true, encoding: .utf8)
        let file = try SafeTensorsFile(path: root + "/adapter/adapter_model.safetensors")
        let kept = file.tensors.filter { keep($0.name) }
        let infos = kept.map(\.info) + extra.map { TensorInfo(name: $0.0, dtype: .f32, shape: $0.1) }
        let writer = try CheckpointWriter(destination: path + "/adapter_model.safetensors", layout: .file, tensors: infos,
                                          metadata: file.header.metadata, overwrite: true, inputs: [])
        for entry in kept { try file.bytes(of: entry).withUnsafeBytes { try writer.write($0) } }
        for (_, shape, value) in extra {
            let values = (0..<shape.reduce(1, *)).map { Float($0 % 7) * value - value }
            try values.withUnsafeBytes { try writer.write($0) }
        }
        try writer.commit()
        return path
    }

    private func merge(_ adapter: String, _ out: String) throws -> ProcessResult {
        let result = try runQConv(["merge-lora", root + "/base", adapter, out])
        XCTAssertEqual(result.status, 0, result.stderr)
        return result
    }

    /// The config differs from the base's in the one member only.
    private func assertUntiedConfig(_ folder: String, line: UInt = #line) throws {
        let base = try String(contentsOfFile: root + "/base/config.json", encoding: .utf8)
        let ours = try String(contentsOfFile: folder + "/config.json", encoding: .utf8)
        XCTAssertEqual(ours, base.replacingOccurrences(of: "\"tie_word_embeddings\": true", with: "\"tie_word_embeddings\": false"), line: line)
        XCTAssertNotEqual(ours, base, line: line)
    }

    /// PEFT's reference: LoRA on embed_tokens and a saved lm_head. Both
    /// tensors are written (lm_head made last), the config is untied.
    func testAdapterChangingBothSidesUntiesAsPEFTMerged() throws {
        let folder = TemporaryDirectory("qconv-tied")
        let result = try merge(root + "/adapter", folder.file("out"))
        XCTAssertTrue(result.stdout.contains("untied embeddings: the adapter changes model.embed_tokens.weight or lm_head.weight, so both are written"),
                      result.stdout)
        let ours = try SafeTensorsFile(path: folder.file("out/model.safetensors")), reference = try SafeTensorsFile(path: root + "/reference.safetensors")
        XCTAssertEqual(ours.tensors.last?.name, head)
        XCTAssertEqual(ours.tensors.count, 21)
        XCTAssertEqual(try floats(ours, head), try floats(reference, head), "lm_head is the adapter's")
        for name in [embed, query] { assertClose(try floats(ours, name), try floats(reference, name), name) }
        try assertUntiedConfig(folder.file("out"))
        let json = try runQConv(["merge-lora", root + "/base", root + "/adapter", "--dry-run", "--json"])
        let untied = try XCTUnwrap(JSONParser.parse(json.stdout).objectValue?["untied"]?.objectValue)
        XCTAssertEqual(untied["output_created"], .bool(true))
        XCTAssertEqual(untied["input"]?.stringValue, embed)
    }

    /// LoRA on embed_tokens only: the lookup changes, the output projection
    /// keeps the base's values (as the adapter was trained).
    func testChangingTheInputEmbeddingKeepsTheOutputAsItWas() throws {
        let folder = TemporaryDirectory("qconv-tied")
        let path = try adapter(in: folder, keeping: { !$0.hasSuffix("lm_head.weight") },
                               config: { $0.replacingOccurrences(of: "\"modules_to_save\": [\n    \"lm_head\"\n  ]", with: "\"modules_to_save\": null") })
        _ = try merge(path, folder.file("out"))
        let ours = try SafeTensorsFile(path: folder.file("out/model.safetensors")), base = try SafeTensorsFile(path: root + "/base/model.safetensors")
        let reference = try SafeTensorsFile(path: root + "/reference.safetensors")
        XCTAssertEqual(try floats(ours, head), try floats(base, embed), "lm_head: the base's tied values")
        assertClose(try floats(ours, embed), try floats(reference, embed), embed)
        try assertUntiedConfig(folder.file("out"))
    }

    /// A saved lm_head only, and LoRA on lm_head: the projection changes,
    /// the embedding is copied.
    func testChangingTheOutputEmbeddingKeepsTheInputAsItWas() throws {
        for lora in [false, true] {
            let folder = TemporaryDirectory("qconv-tied")
            let path = try adapter(in: folder, keeping: { !$0.contains("embed_tokens") && (!lora || !$0.hasSuffix("lm_head.weight")) },
                                   config: { lora ? $0.replacingOccurrences(of: "\"embed_tokens\"", with: "\"lm_head\"")
                                       .replacingOccurrences(of: "\"modules_to_save\": [\n    \"lm_head\"\n  ]", with: "\"modules_to_save\": null") : $0 },
                                   adding: lora ? [("base_model.model.lm_head.lora_A.weight", [4, 64], 0.01), ("base_model.model.lm_head.lora_B.weight", [256, 4], 0.02)] : [])
            _ = try merge(path, folder.file("out"))
            let ours = try SafeTensorsFile(path: folder.file("out/model.safetensors")), base = try SafeTensorsFile(path: root + "/base/model.safetensors")
            XCTAssertEqual(try ours.bytes(of: XCTUnwrap(ours.entry(named: embed))), try base.bytes(of: XCTUnwrap(base.entry(named: embed))), "embed copied")
            let tied = try floats(base, embed), output = try floats(ours, head)
            if lora {
                // W + 2 (B @ A): a change on every element, made from the tied values.
                XCTAssertTrue(zip(output, tied).contains { $0 != $1 } && zip(output, tied).allSatisfy { abs($0 - $1) < 0.1 })
            } else {
                XCTAssertEqual(output, try floats(SafeTensorsFile(path: root + "/reference.safetensors"), head))
            }
            try assertUntiedConfig(folder.file("out"))
        }
    }

    /// An adapter that changes neither embedding leaves the model tied: no
    /// lm_head written, the config copied, the embedding copied.
    func testAdapterChangingNeitherKeepsTheModelTied() throws {
        let folder = TemporaryDirectory("qconv-tied")
        let path = try adapter(in: folder, keeping: { $0.contains("q_proj") }, config: {
            $0.replacingOccurrences(of: "\"modules_to_save\": [\n    \"lm_head\"\n  ]", with: "\"modules_to_save\": null")
        })
        let result = try merge(path, folder.file("out"))
        XCTAssertFalse(result.stdout.contains("untied"), result.stdout)
        let ours = try SafeTensorsFile(path: folder.file("out/model.safetensors")), base = try SafeTensorsFile(path: root + "/base/model.safetensors")
        XCTAssertEqual(ours.tensors.map(\.name), base.tensors.map(\.name))
        XCTAssertNil(ours.entry(named: head))
        XCTAssertEqual(FileManager.default.contents(atPath: folder.file("out/config.json")), FileManager.default.contents(atPath: root + "/base/config.json"))
    }

    /// A tied container (the config embedded) is untied the same way, and
    /// its lm_head is the embedding's stored parts under the new name.
    func testATiedContainerIsUntiedToo() throws {
        let folder = TemporaryDirectory("qconv-tied")
        XCTAssertEqual(try runQConv(["to-nf4", root + "/base", folder.file("base.qc"), "--quiet"]).status, 0)
        let result = try runQConv(["merge-lora", folder.file("base.qc"), root + "/adapter", folder.file("out.qc"), "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(try runQConv(["dequant", folder.file("out.qc"), folder.file("out"), "--quiet"]).status, 0)
        try assertUntiedConfig(folder.file("out"))
        let ours = try SafeTensorsFile(path: folder.file("out/model.safetensors"))
        XCTAssertEqual(try floats(ours, head), try floats(SafeTensorsFile(path: root + "/reference.safetensors"), head))
        let verify = try runQConv(["verify", folder.file("out.qc")])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
    }

    /// A sharded tied base: lm_head goes last into the last shard, and the index lists it.
    func testAShardedBaseGetsLmHeadInItsLastShardAndIndex() throws {
        let folder = TemporaryDirectory("qconv-tied")
        XCTAssertEqual(try runQConv(["to-nf4", root + "/base", folder.file("base.qc"), "--skip", "*", "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["dequant", folder.file("base.qc"), folder.file("sharded"), "--max-shard-size", "150kB", "--quiet"]).status, 0)
        let shards = try FileManager.default.contentsOfDirectory(atPath: folder.file("sharded")).filter { $0.hasSuffix(".safetensors") }.sorted()
        XCTAssertGreaterThan(shards.count, 1)
        let result = try runQConv(["merge-lora", folder.file("sharded"), root + "/adapter", folder.file("out"), "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let last = try SafeTensorsFile(path: folder.file("out/" + (shards.last ?? "")))
        XCTAssertEqual(last.tensors.last?.name, head)
        let index = try XCTUnwrap(JSONParser.parse([UInt8](XCTUnwrap(FileManager.default.contents(atPath: folder.file("out/model.safetensors.index.json"))))).objectValue)
        XCTAssertEqual(index["weight_map"]?.objectValue?[head]?.stringValue, shards.last)
        try assertUntiedConfig(folder.file("out"))
    }

    func testConfigEditsKeepTheRestOfTheText() {
        func edit(_ text: String) -> String? {
            JSONTextEditing.replacingTopLevelValues(of: "tie_word_embeddings", in: Array(text.utf8), with: "false").map { String(decoding: $0, as: UTF8.self) }
        }
        XCTAssertEqual(edit("{\"a\": {\"tie_word_embeddings\": true}, \"tie_word_embeddings\":true ,\"b\":[1,\"}\"]}"),
                       "{\"a\": {\"tie_word_embeddings\": true}, \"tie_word_embeddings\":false ,\"b\":[1,\"}\"]}")
        XCTAssertEqual(edit("{\"x\": \"\\\"tie_word_embeddings\\\": true\", \"tie_word_embeddings\": true, \"tie_word_embeddings\": true}"),
                       "{\"x\": \"\\\"tie_word_embeddings\\\": true\", \"tie_word_embeddings\": false, \"tie_word_embeddings\": false}")
        XCTAssertNil(edit("{\"a\": 1}"))
        XCTAssertNil(edit("[1]"))
    }
}
