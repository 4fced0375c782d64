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
        let changed = try LoRAMerger.plan(base: ContainerReader.model(of: original), adapter: try LoRAAdapter(path: adapter)).changes.map(\.output.name)
        XCTAssertEqual(changed.count, 4, "q_proj and v_proj of two layers")
        for tensor in container.tensors {
            if changed.contains(tensor.name) {
                let other = try XCTUnwrap(hand.tensor(named: tensor.name))
                XCTAssertEqual(tensor.scheme.name, "nf4")
                XCTAssertEqual(tensor.scheme, other.scheme, tensor.name)
                for (part, handPart) in zip(tensor.parts, other.parts) {
                    XCTAssertEqual(try container.readPart(part, of: tensor.name), try hand.readPart(handPart, of: tensor.name), "\(tensor.name)/\(part.name)")
                }
            } else {
                // Untouched tensors are copied as they were stored.
                let before = try XCTUnwrap(original.tensor(named: tensor.name))
                XCTAssertEqual(tensor.scheme, before.scheme)
                XCTAssertEqual(tensor.parts.map(\.checksum), before.parts.map(\.checksum), tensor.name)
            }
        }
        XCTAssertEqual(container.header.files.map(\.name), ["config.json"])
        XCTAssertEqual(try runQConv(["verify", directory.file("merged.qc")]).status, 0)
    }

    /// Merges into a container made by `quantize` and compares every changed
    /// tensor, part for part, with dequant -> merge -> the same quantize by
    /// hand; untouched tensors must keep their stored parts.
    private func assertMergeEqualsByHand(_ quantize: [String], scheme: String, parameters check: (TensorScheme) -> Bool,
                                         base: String? = nil, adapter: String? = nil, changedCount: Int = 4,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        let base = base ?? self.base, adapter = adapter ?? self.adapter
        let directory = TemporaryDirectory()
        try run(quantize + [base, directory.file("base.qc")], file: file, line: line)
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("merged.qc")], file: file, line: line)
        try run(["dequant", directory.file("base.qc"), directory.file("base.safetensors")], file: file, line: line)
        try run(["merge-lora", directory.file("base.safetensors"), adapter, directory.file("merged.safetensors")], file: file, line: line)
        try run(quantize + [directory.file("merged.safetensors"), directory.file("hand.qc")], file: file, line: line)

        let container = try ContainerFile(path: directory.file("merged.qc"))
        let hand = try ContainerFile(path: directory.file("hand.qc"))
        let original = try ContainerFile(path: directory.file("base.qc"))
        let changed = try LoRAMerger.plan(base: ContainerReader.model(of: original), adapter: try LoRAAdapter(path: adapter)).changes.map(\.output.name)
        XCTAssertEqual(changed.count, changedCount, file: file, line: line)
        for tensor in container.tensors {
            let before = try XCTUnwrap(original.tensor(named: tensor.name), file: file, line: line)
            if changed.contains(tensor.name) {
                let other = try XCTUnwrap(hand.tensor(named: tensor.name), file: file, line: line)
                XCTAssertEqual(tensor.scheme.name, scheme, tensor.name, file: file, line: line)
                XCTAssertTrue(check(tensor.scheme), "\(tensor.name): \(tensor.scheme)", file: file, line: line)
                XCTAssertEqual(tensor.scheme, other.scheme, tensor.name, file: file, line: line)
                XCTAssertEqual(tensor.parts.map(\.name), before.parts.map(\.name), tensor.name, file: file, line: line)
                XCTAssertEqual(tensor.parts.count, other.parts.count, tensor.name, file: file, line: line)
                for (part, handPart) in zip(tensor.parts, other.parts) {
                    XCTAssertEqual(try container.readPart(part, of: tensor.name), try hand.readPart(handPart, of: tensor.name), "\(tensor.name)/\(part.name)",
                                   file: file, line: line)
                }
                XCTAssertNotEqual(tensor.parts.map(\.checksum), before.parts.map(\.checksum), "\(tensor.name) changed", file: file, line: line)
            } else {
                XCTAssertEqual(tensor.scheme, before.scheme, tensor.name, file: file, line: line)
                XCTAssertEqual(tensor.parts.map(\.checksum), before.parts.map(\.checksum), tensor.name, file: file, line: line)
            }
        }
        XCTAssertEqual(try runQConv(["verify", directory.file("merged.qc")]).status, 0, file: file, line: line)
    }

    /// A BF16 base: the merge starts from the dequantized values rounded to
    /// BF16 (what `dequant` writes, and what PEFT's QLoRA merge adds the delta
    /// to) and re-quantizes the merged values rounded to BF16 (what `merge-lora`
    /// writes); skipping either rounding changes codes.
    func testBF16BaseIsRoundedAsDequantAndMergeWriteIt() throws {
        let case_ = Fixtures.path("lora/lora_llama_bf16_base")
        for quantize in [["to-nf4"], ["to-int8"]] {
            try assertMergeEqualsByHand(quantize, scheme: quantize == ["to-nf4"] ? "nf4" : "int8", parameters: { _ in true },
                                        base: case_ + "/base", adapter: case_ + "/adapter",
                                        changedCount: try LoRAAdapter(path: case_ + "/adapter").modules.count)
        }
        let directory = TemporaryDirectory()
        try run(["to-nf4", case_ + "/base", directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), case_ + "/adapter", directory.file("direct.safetensors"), "--dequantize"])
        try run(["dequant", directory.file("base.qc"), directory.file("base.safetensors")])
        try run(["merge-lora", directory.file("base.safetensors"), case_ + "/adapter", directory.file("hand.safetensors")])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("direct.safetensors"))),
                       try Data(contentsOf: URL(fileURLWithPath: directory.file("hand.safetensors"))))
    }

    func testFP4WithItsOwnBlockSizeAndNoDoubleQuantIsRequantizedAsByHand() throws {
        try assertMergeEqualsByHand(["to-fp4", "--block-size", "128", "--no-double-quant"], scheme: "fp4") { scheme in
            if case .fourBit(let p) = scheme, p.blockSize == 128, p.blockScales == .float32 { return true }
            return false
        }
    }

    func testInt8IsRequantizedAsByHand() throws {
        try assertMergeEqualsByHand(["to-int8"], scheme: "int8") { scheme in
            if case .int8 = scheme { return true }
            return false
        }
        // With an absolute outlier threshold too: the rule is re-applied to the merged values.
        try assertMergeEqualsByHand(["to-int8", "--outlier-threshold", "0.2"], scheme: "int8") { scheme in
            if case .int8(let p) = scheme, p.outlierRule == .absolute(0.2) { return p.outlierColumnCount > 0 && p.outlierColumnCount < 64 }
            return false
        }
    }

    /// `--dequantize --dtype f16`: the container's values are merged in float32
    /// and rounded to F16 once, not rounded to F16 and merged and rounded again.
    func testDequantizeToF16RoundsTheFloat32MergeOnce() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", base, directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("f16.safetensors"), "--dequantize", "--dtype", "f16"])
        // The float32 merge: the dequantized F32 base merged in float32 (the base is F32, so nothing else is rounded).
        try run(["merge-lora", directory.file("base.qc"), adapter, directory.file("f32.safetensors"), "--dequantize", "--dtype", "f32"])
        try run(["dequant", directory.file("base.qc"), directory.file("base-f32.safetensors"), "--dtype", "f32"])
        try run(["merge-lora", directory.file("base-f32.safetensors"), adapter, directory.file("hand-f32.safetensors")])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("f32.safetensors"))),
                       try Data(contentsOf: URL(fileURLWithPath: directory.file("hand-f32.safetensors"))))

        let f16 = try Checkpoint(path: directory.file("f16.safetensors")), f32 = try Checkpoint(path: directory.file("f32.safetensors"))
        let changed = Set(try LoRAMerger.plan(base: SafeTensorsReader.model(of: f32), adapter: try LoRAAdapter(path: adapter)).changes.map(\.output.name))
        XCTAssertEqual(changed.count, 4)
        var twiceRoundedDiffers = 0
        for tensor in f32.tensors {
            let half = try XCTUnwrap(f16.tensor(named: tensor.name))
            XCTAssertEqual(half.info.dtype, .f16, tensor.name)
            let bits = try half.stored.allBytes().withUnsafeBytes { raw in (0..<(raw.count / 2)).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) } }
            let values = try tensor.stored.allFloats()
            XCTAssertEqual(bits, values.map(FloatConversion.halfBits(from:)), tensor.name)
            if changed.contains(tensor.name) {
                // Rounding the base to F16 before the merge would give other bits somewhere.
                let baseValues = try XCTUnwrap(try Checkpoint(path: directory.file("base-f32.safetensors")).tensor(named: tensor.name)).stored.allFloats()
                for (i, value) in values.enumerated() {
                    let roundedBase = FloatConversion.float(fromHalf: FloatConversion.halfBits(from: baseValues[i]))
                    let delta = value - baseValues[i]
                    if FloatConversion.halfBits(from: roundedBase + delta) != bits[i] { twiceRoundedDiffers += 1 }
                }
            }
        }
        XCTAssertGreaterThan(twiceRoundedDiffers, 0, "the comparison tells one rounding from two")
    }

    /// The adapter replaces a tensor the container stores raw (an embedding):
    /// verify measures it (the merge is recorded in the provenance) instead of
    /// failing it as not identical, and still requires every other raw tensor
    /// to be exact.
    func testVerifyMeasuresRawTensorsTheMergeRewrote() throws {
        let fixture = Fixtures.path("lora/lora_llama_embedding_modules_to_save")
        let directory = TemporaryDirectory()
        try run(["to-nf4", fixture + "/base", directory.file("base.qc")])
        try run(["merge-lora", directory.file("base.qc"), fixture + "/adapter", directory.file("merged.qc")])
        let container = try ContainerFile(path: directory.file("merged.qc"))
        XCTAssertEqual(container.tensor(named: "model.embed_tokens.weight")?.scheme, .raw)
        XCTAssertEqual(RoundTripVerifier.mergedTensorNames(in: container.header.provenance),
                       ["lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"])

        let result = try runQConv(["verify", fixture + "/merged", directory.file("merged.qc"), "--json", "--tensors"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try XCTUnwrap(JSONParser.parse(result.stdout).objectValue)
        XCTAssertEqual(report["passed"], .bool(true))
        XCTAssertEqual(report["exact_tensor_count"]?.numberValue?.intValue, 6, "norms stay exact, and the replaced lm_head equals PEFT's")
        let rows = try XCTUnwrap(report["tensors"]?.arrayValue?.compactMap(\.objectValue))
        let embed = try XCTUnwrap(rows.first { $0["name"]?.stringValue == "model.embed_tokens.weight" })
        XCTAssertEqual(embed["scheme"], .string("raw"))
        XCTAssertEqual(embed["identical"], .null, "measured, not required to be identical")
        XCTAssertEqual(embed["violations"]?.arrayValue, [])
        let error = try XCTUnwrap(embed["metrics"]?.objectValue?["max_abs_err"]?.numberValue?.doubleValue)
        XCTAssertGreaterThan(error, 0, "float32 arithmetic differs from PEFT's in the last bits")
        XCTAssertLessThan(error, 1e-5)
        // Thresholds apply to it like to a quantized tensor.
        let strict = try runQConv(["verify", fixture + "/merged", directory.file("merged.qc"), "--max-abs-err", "1e-9", "--only", "*embed_tokens*"])
        XCTAssertEqual(strict.status, 1, strict.stderr)
        XCTAssertTrue(strict.stderr.contains("model.embed_tokens.weight") && strict.stderr.contains("max_abs_err"), strict.stderr)

        // Without a recorded merge, a raw tensor that differs still fails.
        let unmerged = try runQConv(["verify", fixture + "/merged", directory.file("base.qc"), "--only", "*embed_tokens*"])
        XCTAssertEqual(unmerged.status, 1, unmerged.stderr)
        XCTAssertTrue(unmerged.stderr.contains("model.embed_tokens.weight': not identical (stored raw, must round-trip exactly)"), unmerged.stderr)
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
