import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// What `to-*` quantizes: glob patterns, patterns that match nothing, the
/// dry run, kept tensors in a smaller dtype, and output names.
final class SelectionCLITests: XCTestCase {
    let sample = Fixtures.sample("sharded_llama")
    let gpt2 = Fixtures.path("lora/lora_gpt2_fan_in_fan_out_bias/base")

    private func quantized(_ arguments: [String]) throws -> [String] {
        let result = try runQConv(arguments + ["--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        return (report["tensors"] as! [[String: Any]]).filter { $0["scheme"] as? String != "raw" && $0["action"] as? String != "keep" }
            .map { $0["name"] as! String }
    }

    func testAPatternThatMatchesNothingIsAUsageErrorWithTheClosestNames() throws {
        let directory = TemporaryDirectory()
        let typo = try runQConv(["to-nf4", sample, directory.file("m.qc"), "--only", "q_prj"])
        XCTAssertEqual(typo.status, 2)
        XCTAssertEqual(typo.stderr, "qconv: error: --only 'q_prj' matches no tensor (a glob matches whole names: '*q_prj*' matches the names "
                       + "that contain it); the closest names: model.layers.0.self_attn.q_proj.weight, model.layers.1.self_attn.q_proj.weight\n")
        let skip = try runQConv(["to-nf4", sample, directory.file("m.qc"), "--skip", "*nosuch*"])
        XCTAssertEqual(skip.status, 2)
        XCTAssertTrue(skip.stderr.hasPrefix("qconv: error: --skip '*nosuch*' matches no tensor"), skip.stderr)
        XCTAssertEqual(directory.contents(), [], "nothing written")
    }

    func testOnlyNarrowsTheDefaultRuleUnlessAll() throws {
        let directory = TemporaryDirectory()
        // Globs match whole names; biases are 1-D and stay unless --all.
        XCTAssertEqual(try quantized(["to-nf4", gpt2, directory.file("a.qc"), "--only", "*attn*"]),
                       ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                        "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.weight"])
        XCTAssertEqual(try quantized(["to-nf4", gpt2, directory.file("b.qc"), "--only", "*h.0.attn*", "--all"]),
                       ["transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_attn.weight",
                        "transformer.h.0.attn.c_proj.bias", "transformer.h.0.attn.c_proj.weight"])
        // A regular expression, searched in the name.
        XCTAssertEqual(try quantized(["to-nf4", gpt2, directory.file("c.qc"), "--only", #"re:h\.1\..*c_proj"#]),
                       ["transformer.h.1.attn.c_proj.weight", "transformer.h.1.mlp.c_proj.weight"])
        // An embedding named explicitly is taken.
        XCTAssertEqual(try quantized(["to-nf4", gpt2, directory.file("d.qc"), "--only", "transformer.wte.weight"]), ["transformer.wte.weight"])
        let biases = try runQConv(["to-nf4", gpt2, directory.file("e.qc"), "--only", "*bias"])
        XCTAssertEqual(biases.status, 2)
        XCTAssertTrue(biases.stderr.contains("names no tensor that can be quantized (those it names are kept: 1-D); pass --all"), biases.stderr)
    }

    func testNamePatterns() throws {
        let patterns = try NamePatterns(["model.*.q_proj.weight", "lm_head?weight", "layer[0-1]", #"re:mlp\.(up|down)"#, #"a\*b"#])
        XCTAssertTrue(patterns.matches("model.layers.0.self_attn.q_proj.weight"))
        XCTAssertFalse(patterns.matches("model.layers.0.self_attn.k_proj.weight"))
        XCTAssertTrue(patterns.matches("lm_head.weight"))
        XCTAssertTrue(patterns.matches("layer1"))
        XCTAssertFalse(patterns.matches("layer2"))
        XCTAssertTrue(patterns.matches("model.layers.0.mlp.down_proj.weight"))
        XCTAssertFalse(patterns.matches("model.layers.0.mlp.gate_proj.weight"))
        XCTAssertTrue(patterns.matches("a*b"))
        XCTAssertFalse(patterns.matches("aXb"))
        XCTAssertTrue(try NamePatterns(["*"]).matches(""))
        XCTAssertTrue(try NamePatterns(["[!a]bc"]).matches("xbc"))
        XCTAssertFalse(try NamePatterns(["[!a]bc"]).matches("abc"))
        XCTAssertThrowsError(try NamePatterns(["layer[0-1"]))
        XCTAssertThrowsError(try NamePatterns(["re:("]))
    }

    func testTheDryRunWritesNothingAndProjectsTheSizesAConversionWrites() throws {
        let directory = TemporaryDirectory()
        let preview = try runQConv(["to-nf4", sample, "--dry-run", "--json"])
        XCTAssertEqual(preview.status, 0, preview.stderr)
        XCTAssertEqual(directory.contents(), [])
        let projected = try JSONSerialization.jsonObject(with: Data(preview.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(projected["dry_run"] as? Bool, true)
        let convert = try runQConv(["to-nf4", sample, directory.file("m.qc"), "--json"])
        let written = try JSONSerialization.jsonObject(with: Data(convert.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(projected["projected_tensor_bytes"] as? Int, written["stored_tensor_bytes"] as? Int)
        let rows = projected["tensors"] as! [[String: Any]]
        let writtenRows = written["tensors"] as! [[String: Any]]
        for (row, writtenRow) in zip(rows, writtenRows) {
            XCTAssertEqual(row["projected_bytes"] as? Int, writtenRow["stored_bytes"] as? Int, row["name"] as! String)
        }
        XCTAssertEqual(rows.first { $0["name"] as? String == "lm_head.weight" }?["reason"] as? String, "lm_head")
        XCTAssertEqual(rows.first { $0["name"] as? String == "model.norm.weight" }?["reason"] as? String, "1-D")
        let text = try runQConv(["to-int8", sample, "--dry-run", "--only", "*q_proj*"]).stdout
        XCTAssertTrue(text.hasPrefix("dry run      to-int8 of \(sample): nothing written\n"), text)
        XCTAssertTrue(text.contains("tensors      21 (2 to quantize, 19 kept)"), text)
        XCTAssertTrue(text.contains(", before outlier columns"), text)
        XCTAssertTrue(text.contains("model.layers.0.self_attn.q_proj.weight          F32    [128,128]  int8     named"), text)
    }

    func testKeptTensorsCanBeStoredInASmallerDType() throws {
        let directory = TemporaryDirectory()
        let output = directory.file("m.qc")
        let result = try runQConv(["to-nf4", sample, output, "--keep-dtype", "f16", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let container = try ContainerFile(path: output)
        XCTAssertEqual(container.tensor(named: "model.embed_tokens.weight")?.info.dtype, .f16)
        XCTAssertEqual(container.tensor(named: "model.embed_tokens.weight")?.scheme, .raw)
        XCTAssertEqual(container.tensor(named: "model.layers.0.self_attn.q_proj.weight")?.info.dtype, .f32, "a quantized tensor keeps its source dtype")
        // The kept tensors are measured, not required to be identical.
        let verify = try runQConv(["verify", sample, output, "--min-sqnr", "50", "--only", "*embed*"])
        XCTAssertEqual(verify.status, 0, verify.stderr + verify.stdout)
        // The sizes of the report and of inspect stay on one basis: the source's tensor data.
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(report["source_tensor_bytes"] as? Int, 1_567_232)
        let inspect = try runQConv(["inspect", output]).stdout
        XCTAssertTrue(inspect.contains("size         1.57 MB source -> "), inspect)
        let bad = try runQConv(["to-nf4", sample, directory.file("x.qc"), "--keep-dtype", "f32"])
        XCTAssertEqual(bad.status, 2, bad.stderr)
    }

    func testAContainerIsNotWrittenUnderAnotherFormatsName() throws {
        let directory = TemporaryDirectory()
        for name in ["m.safetensors", "pytorch_model.bin", "m.GGUF"] {
            let result = try runQConv(["to-nf4", sample, directory.file(name)])
            XCTAssertEqual(result.status, 2, name)
            XCTAssertTrue(result.stderr.contains("name it .qc (or pass --force-name)"), result.stderr)
        }
        XCTAssertEqual(directory.contents(), [])
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.safetensors"), "--force-name", "--quiet"]).status, 0)
    }
}
