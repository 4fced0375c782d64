import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// merge-lora into a quantized base (QLoRA): dequantize, add, quantize.
final class MergeLoRAContainerCLITests: XCTestCase {
    let base = Fixtures.sample("lora_llama_basic/base")
    let adapter = Fixtures.sample("lora_llama_basic/adapter")
    let merged = Fixtures.sample("lora_llama_basic/merged")

    func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try runQConv(arguments + ["--quiet"])
        XCTAssertEqual(result.status, 0, "\(arguments.joined(separator: " ")): \(result.stderr)", file: file, line: line)
    }

    func testMergingIntoAnNF4ContainerEqualsDequantMergeQuantizeByHand() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", base, directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("merged.qc")])
        // By hand: dequant -> merge -> to-nf4.
        try run(["dequant", directory.file("base.qc"), directory.file("base.safetensors")])
        try run(["merge-lora", directory.file("base.safetensors"), adapter, directory.file("merged.safetensors")])
        try run(["to-nf4", directory.file("merged.safetensors"), directory.file("hand.qc")])

        let container = try ContainerFile(path: directory.file("merged.qc"))
        let hand = try ContainerFile(path: directory.file("hand.qc"))
        let original = try ContainerFile(path: directory.file("base.qc"))
        let changed = try LoRAMerger.plan(container: original, adapter: try LoRAAdapter(path: adapter)).changes.map(\.output.name)
        XCTAssertEqual(changed.count, 4, "q_proj and v_proj of two layers")
        for tensor in container.tensors {
            if changed.contains(tensor.name) {
                let other = try XCTUnwrap(hand.tensor(named: tensor.name))
                XCTAssertEqual(tensor.scheme, .nf4)
                XCTAssertEqual(tensor.parameters, other.parameters, tensor.name)
                for (part, handPart) in zip(tensor.parts, other.parts) {
                    XCTAssertEqual(try container.readPart(part, of: tensor.name), try hand.readPart(handPart, of: tensor.name), "\(tensor.name)/\(part.name)")
                }
            } else {
                // Untouched tensors are copied as they were stored.
                let before = try XCTUnwrap(original.tensor(named: tensor.name))
                XCTAssertEqual(tensor.parameters, before.parameters)
                XCTAssertEqual(tensor.parts.map(\.checksum), before.parts.map(\.checksum), tensor.name)
            }
        }
        XCTAssertEqual(container.header.files.map(\.name), ["config.json"])
        XCTAssertEqual(try runQConv(["verify", directory.file("merged.qc")]).status, 0)
    }

    func testVerifyAgainstPEFTShowsNF4LevelErrorOnly() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", base, directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("merged.qc")])
        let result = try runQConv(["verify", merged, directory.file("merged.qc"), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let relative = (report["overall"] as! [String: Any])["rel_rmse"] as! Double
        // NF4 of N(0, σ) weights: about 0.09; a merge that went wrong would be far off.
        XCTAssertLessThan(relative, 0.12)
        XCTAssertEqual(report["exact_tensor_count"] as? Int, 7, "embeddings, norms and lm_head are kept raw")
        // With a threshold only NF4-level error passes.
        XCTAssertEqual(try runQConv(["verify", merged, directory.file("merged.qc"), "--max-rel-rmse", "0.12", "--quiet"]).status, 0)
    }

    func testDequantizeOptionWritesWhatDequantThenMergeWrites() throws {
        let directory = TemporaryDirectory()
        try run(["to-int8", base, directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("direct.safetensors"), "--dequantize"])
        try run(["dequant", directory.file("base.qc"), directory.file("base.safetensors")])
        try run(["merge-lora", directory.file("base.safetensors"), adapter, directory.file("hand.safetensors")])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("direct.safetensors"))),
                       try Data(contentsOf: URL(fileURLWithPath: directory.file("hand.safetensors"))))
        // A folder OUT gets the embedded config.json back.
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("folder"), "--dequantize", "--dtype", "bf16"])
        let folder = try Checkpoint(path: directory.file("folder"))
        XCTAssertEqual(folder.auxiliaryFiles, ["config.json"])
        XCTAssertEqual(Set(folder.tensors.map(\.info.dtype)), [.bf16])
    }

    func testAMisShapedAdapterIsRefusedAndNothingIsWritten() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", base, directory.file("base.qc")])
        // Rewrite lora_B of one module as if it had another shape (same byte count).
        let adapterCopy = directory.file("adapter")
        try FileManager.default.createDirectory(atPath: adapterCopy, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: adapter + "/adapter_config.json", toPath: adapterCopy + "/adapter_config.json")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: adapter + "/adapter_model.safetensors"))
        let length = Int(bytes[0..<8].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = String(decoding: bytes[8..<8 + length], as: UTF8.self)
        let key = "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,8]"
        XCTAssertTrue(header.contains(key), "fixture layout changed")
        header = header.replacingOccurrences(of: key, with: "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[8,64]")
        bytes.replaceSubrange(8..<8 + length, with: Data(header.utf8))
        try bytes.write(to: URL(fileURLWithPath: adapterCopy + "/adapter_model.safetensors"))

        for out in ["out.qc", "out.safetensors"] {
            var arguments = ["merge-lora", directory.file("base.qc"), adapterCopy, directory.file(out)]
            if out.hasSuffix(".safetensors") { arguments.append("--dequantize") }
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 3, result.stderr)
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: ") && result.stderr.contains("q_proj"), result.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file(out)))
        }
        XCTAssertEqual(directory.contents().filter { $0.contains("qconv-tmp") }, [])
    }

    func testDryRunOnAContainer() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", base, directory.file("base.qc")])
        let result = try runQConv(["merge-lora", directory.file("base.qc"), adapter, "--dry-run", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(report["tensors_changed"] as? Int, 4)
        XCTAssertEqual(report["dry_run"] as? Bool, true)
    }
}
