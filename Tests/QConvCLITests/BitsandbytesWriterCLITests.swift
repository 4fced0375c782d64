import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// `to-nf4 | to-fp4 | to-int8 --format hf`: what transformers + bitsandbytes
/// save for the same base (Tests/Fixtures/hf_bnb, Tests/Fixtures/models), byte for byte.
final class BitsandbytesWriterCLITests: XCTestCase {
    /// Every file of `expected` is in `folder` with the same bytes, and nothing else is.
    private func assertSameFiles(_ folder: String, _ expected: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: expected).sorted()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), names, label, file: file, line: line)
        for name in names {
            let got = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
            let want = try Data(contentsOf: URL(fileURLWithPath: expected + "/" + name))
            XCTAssertTrue(got == want, "\(label): \(name) differs from what transformers saved", file: file, line: line)
        }
    }

    static let cases: [(arguments: [String], base: String, expected: String)] = [
        (["to-nf4"], "hf_bnb/base_f16", "hf_bnb/nf4_dq_f16"),
        (["to-nf4"], "hf_bnb/base_bf16", "hf_bnb/nf4_dq_bf16"),
        (["to-fp4", "--no-double-quant"], "hf_bnb/base_f16", "hf_bnb/fp4_f16"),
        (["to-fp4", "--no-double-quant"], "hf_bnb/base_bf16", "hf_bnb/fp4_bf16"),
        (["to-int8"], "hf_bnb/base_f16", "hf_bnb/int8_f16"),
        (["to-int8"], "hf_bnb/base_bf16", "hf_bnb/int8_bf16"),
        (["to-nf4", "--max-shard-size", "60KB"], "hf_bnb/base_f16", "hf_bnb/nf4_dq_f16_sharded"),
        (["to-nf4", "--compute-dtype", "bf16"], "models/hf_fp32_llama", "models/hf_bnb_nf4_dq"),
        (["to-fp4", "--no-double-quant"], "models/hf_fp32_llama", "models/hf_bnb_fp4"),
        (["to-int8"], "models/hf_fp32_llama", "models/hf_bnb_int8"),
    ]

    /// F16, BF16 and F32 bases; NF4 with double quantization, FP4, int8; one
    /// file and three shards: every tensor, every quant-state blob, the
    /// config and the index are the bytes transformers wrote.
    func testWritesWhatTransformersSaves() throws {
        for (arguments, base, expected) in Self.cases {
            let directory = TemporaryDirectory()
            let out = directory.file("out")
            let result = try runQConv(arguments + [Fixtures.path(base), out, "--format", "hf", "--quiet"])
            XCTAssertEqual(result.status, 0, "\(arguments) \(base): \(result.stderr)")
            try assertSameFiles(out, Fixtures.path(expected), "\(arguments) \(base)")
        }
    }

    /// The written folder reads back as the model it holds, and measures as transformers' own save does.
    func testReadsItsOwnOutputBack() throws {
        let directory = TemporaryDirectory()
        let out = directory.file("nf4")
        XCTAssertEqual(try runQConv(["to-nf4", Fixtures.path("hf_bnb/base_f16"), out, "--format", "hf", "--quiet"]).status, 0)
        let model = try Model.open(out)
        XCTAssertEqual(model.format, .bitsandbytes(.folder))
        XCTAssertEqual(model.tensors.filter { $0.scheme.isQuantized }.count, 14)
        let ours = try runQConv(["verify", Fixtures.path("hf_bnb/base_f16"), out, "--json"])
        let theirs = try runQConv(["verify", Fixtures.path("hf_bnb/base_f16"), Fixtures.path("hf_bnb/nf4_dq_f16"), "--json"])
        XCTAssertEqual(ours.status, 0, ours.stderr)
        XCTAssertEqual(ours.stdout.replacingOccurrences(of: out, with: "X"),
                       theirs.stdout.replacingOccurrences(of: Fixtures.path("hf_bnb/nf4_dq_f16"), with: "X"))
        let text = try runQConv(["to-int8", Fixtures.path("hf_bnb/base_bf16"), directory.file("int8"), "--format", "hf"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("plain int8 of every row"), text.stdout)
    }

    /// A container and a bitsandbytes folder quantized the same way convert
    /// into each other without quantizing again: the codes are the same bytes.
    func testContainerAndBitsandbytesReLayTheirCodes() throws {
        let directory = TemporaryDirectory()
        let container = directory.file("nf4.qc"), back = directory.file("back")
        // transformers' save -> container -> transformers' layout again.
        let toContainer = try runQConv(["to-nf4", Fixtures.path("hf_bnb/nf4_dq_bf16"), container, "--json"])
        XCTAssertEqual(toContainer.status, 0, toContainer.stderr)
        XCTAssertTrue(toContainer.stdout.contains("\"relaid\": true"), toContainer.stdout)
        XCTAssertEqual(try runQConv(["to-nf4", container, back, "--format", "hf", "--quiet"]).status, 0)
        try assertSameFiles(back, Fixtures.path("hf_bnb/nf4_dq_bf16"), "container -> hf")
        // The container's tensors decode to what the bitsandbytes folder's decode to.
        let a = try runQConv(["dequant", container, directory.file("a"), "--quiet"])
        let b = try runQConv(["dequant", Fixtures.path("hf_bnb/nf4_dq_bf16"), directory.file("b"), "--quiet"])
        XCTAssertEqual(a.status + b.status, 0, a.stderr + b.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("a/model.safetensors"))),
                       try Data(contentsOf: URL(fileURLWithPath: directory.file("b/model.safetensors"))))
        // Both give back the base's config.json: quantization_config gone (the container embedded it).
        for folder in ["a", "b"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file(folder + "/config.json"))),
                           try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("hf_bnb/base_bf16/config.json"))), folder)
        }
        // int8: the same, through a container made by qconv without outliers.
        let int8 = directory.file("int8.qc")
        XCTAssertEqual(try runQConv(["to-int8", Fixtures.path("hf_bnb/base_f16"), int8, "--outlier-threshold", "0", "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["to-int8", int8, directory.file("int8"), "--format", "hf", "--quiet"]).status, 0)
        try assertSameFiles(directory.file("int8"), Fixtures.path("hf_bnb/int8_f16"), "int8 container -> hf")
    }

    func testRefusesWhatHasNoBitsandbytesForm() throws {
        let directory = TemporaryDirectory()
        // Another scheme than the stored one would quantize twice.
        let other = try runQConv(["to-fp4", Fixtures.path("hf_bnb/nf4_dq_f16"), directory.file("x")])
        XCTAssertEqual(other.status, 3)
        XCTAssertTrue(other.stderr.contains("model.layers.0.mlp.down_proj.weight' is stored as nf4, block size 64, double quant, not fp4"), other.stderr)
        // int8 with outlier columns.
        let outliers = directory.file("outliers.qc")
        XCTAssertEqual(try runQConv(["to-int8", Fixtures.path("hf_bnb/base_f16"), outliers, "--outlier-threshold", "0.2", "--quiet"]).status, 0)
        let split = try runQConv(["to-int8", outliers, directory.file("y"), "--format", "hf"])
        XCTAssertEqual(split.status, 2, split.stderr)
        XCTAssertTrue(split.stderr.contains("outlier columns kept in FP16, which has no bitsandbytes form"), split.stderr)
        // Asking for outliers, or for hf options without hf, is a usage error.
        for arguments in [["to-int8", "--format", "hf", "--outlier-threshold", "6"], ["to-nf4", "--compute-dtype", "f16"],
                          ["to-nf4", "--max-shard-size", "1GB"], ["to-nf4", "--format", "gguf"]] {
            let result = try runQConv(arguments + [Fixtures.path("hf_bnb/base_f16"), directory.file("z")])
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
        }
        // Embeddings are not linear layers.
        let all = try runQConv(["to-nf4", Fixtures.path("hf_bnb/base_f16"), directory.file("w"), "--format", "hf", "--all"])
        XCTAssertEqual(all.status, 2)
        XCTAssertTrue(all.stderr.contains("tensor 'model.embed_tokens.weight': embeddings and norms stay unquantized"), all.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("w")))
    }

    /// Linear layers left raw by --skip are named in llm_int8_skip_modules, so transformers keeps them raw too.
    func testSkippedLinearLayersAreSkipModules() throws {
        let directory = TemporaryDirectory()
        let out = directory.file("out")
        let result = try runQConv(["to-nf4", Fixtures.path("hf_bnb/base_f16"), out, "--format", "hf", "--skip", "*down_proj*", "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        let quantization = try XCTUnwrap(config["quantization_config"] as? [String: Any])
        XCTAssertEqual(quantization["llm_int8_skip_modules"] as? [String], ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"])
        XCTAssertEqual(try runQConv(["verify", out]).status, 0)
    }

    /// merge-lora into a bitsandbytes base writes the same layout: the same
    /// shards, config and side files; changed weights quantized again.
    func testMergeIntoABitsandbytesBaseKeepsItsLayout() throws {
        let directory = TemporaryDirectory()
        let base = directory.file("base"), merged = directory.file("merged")
        let sample = Fixtures.sample("lora_llama_basic")
        XCTAssertEqual(try runQConv(["to-nf4", sample + "/base", base, "--format", "hf", "--max-shard-size", "100KB", "--quiet"]).status, 0)
        let merge = try runQConv(["merge-lora", base, sample + "/adapter", merged, "--quiet"])
        XCTAssertEqual(merge.status, 0, merge.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: merged).sorted(), try FileManager.default.contentsOfDirectory(atPath: base).sorted())
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: merged + "/config.json")), try Data(contentsOf: URL(fileURLWithPath: base + "/config.json")))
        let before = try Model.open(base), after = try Model.open(merged)
        XCTAssertEqual(after.tensors.map(\.info), before.tensors.map(\.info))
        XCTAssertEqual(after.tensors.map(\.file), before.tensors.map(\.file))
        var changed = 0
        for (a, b) in zip(before.tensors, after.tensors) {
            if try a.parts.map({ try $0.readAll() }) != b.parts.map({ try $0.readAll() }) { changed += 1 }
        }
        XCTAssertEqual(changed, 4, "the adapter changes q_proj and v_proj of two layers")
        XCTAssertEqual(try runQConv(["verify", merged]).status, 0)
    }

    /// Shards smaller than some tensors: those get shards of their own, placed
    /// as huggingface_hub places them, and the merge writes the tensors in
    /// that order (the writer's `writingOrder`).
    func testMergeIntoShardsSmallerThanATensor() throws {
        let directory = TemporaryDirectory()
        let base = directory.file("base"), sample = Fixtures.sample("lora_llama_basic")
        XCTAssertEqual(try runQConv(["to-nf4", sample + "/base", base, "--format", "hf", "--quiet"]).status, 0)
        for (name, extra) in [("merged", [String]()), ("merged-safetensors", ["--dequantize"])] {
            let merge = try runQConv(["merge-lora", base, sample + "/adapter", directory.file(name), "--max-shard-size", "3kB", "--quiet"] + extra)
            XCTAssertEqual(merge.status, 0, merge.stderr)
            XCTAssertEqual(try runQConv(["verify", directory.file(name)]).status, 0)
            let shards = try FileManager.default.contentsOfDirectory(atPath: directory.file(name)).filter { $0.hasSuffix(".safetensors") }
            XCTAssertGreaterThan(shards.count, 3, name)
        }
    }
}
