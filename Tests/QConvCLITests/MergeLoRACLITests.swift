import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// `qconv merge-lora` against the weights PEFT 0.21.2's merge_and_unload() wrote.
final class MergeLoRACLITests: XCTestCase {
    /// The reference cases from shared/refdata and the extra low-precision ones
    /// (see lora/peft_extra/generate.py): the least the discovery must find.
    static let knownCases = [
        "lora_llama_basic", "lora_llama_bf16_base", "lora_llama_rslora_patterns",
        "lora_llama_embedding_modules_to_save", "lora_gpt2_fan_in_fan_out_bias", "dora_llama",
        "peft_extra/f16base_f16ad", "peft_extra/bf16base_bf16ad", "peft_extra/emb_bf16base",
        "peft_extra/dora_bf16base", "peft_extra/gpt2_lorabias_f16",
    ]

    /// Every case folder under Tests/Fixtures/lora, so that a new one is tested without being listed.
    static let cases = discoverCases(under: Fixtures.path("lora"))

    /// The folders under `root` (paths relative to it, sorted) that hold
    /// `base/`, `adapter/` and `merged/`; a case folder is not searched further.
    static func discoverCases(under root: String) -> [String] {
        let manager = FileManager.default
        func isDirectory(_ path: String) -> Bool {
            var directory: ObjCBool = false
            return manager.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
        }
        var found: [String] = []
        func search(_ relative: String) {
            let path = relative.isEmpty ? root : root + "/" + relative
            if !relative.isEmpty && ["base", "adapter", "merged"].allSatisfy({ isDirectory(path + "/" + $0) }) {
                found.append(relative)
                return
            }
            for name in ((try? manager.contentsOfDirectory(atPath: path)) ?? []).sorted() where !name.hasPrefix(".") && isDirectory(path + "/" + name) {
                search(relative.isEmpty ? name : relative + "/" + name)
            }
        }
        search("")
        return found.sorted()
    }

    func testEveryCaseFolderIsDiscovered() throws {
        XCTAssertEqual(Set(Self.knownCases).subtracting(Self.cases), [], "discovered: \(Self.cases)")
        // A new case anywhere under the fixtures is found; incomplete folders are not.
        let folder = TemporaryDirectory("qconv-merge-lora")
        for path in ["new_case/base", "new_case/adapter", "new_case/merged", "group/nested/base", "group/nested/adapter", "group/nested/merged",
                     "incomplete/base", "incomplete/adapter"] {
            try FileManager.default.createDirectory(atPath: folder.file(path), withIntermediateDirectories: true)
        }
        XCTAssertEqual(Self.discoverCases(under: folder.path), ["group/nested", "new_case"])
    }

    private func casePath(_ name: String, _ part: String) -> String { Fixtures.path("lora/\(name)/\(part)") }

    @discardableResult
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
            // Every tensor the adapter does not change is copied byte for byte.
            let plan = try LoRAMergePlan(adapter: try LoRAAdapter(path: casePath(name, "adapter")),
                                         baseTensors: try Checkpoint(path: casePath(name, "base")).tensors.map(\.info), baseDescription: name)
            let changed = Set(plan.changes.map(\.output.name))
            XCTAssertFalse(changed.isEmpty, name)
            let base = try SafeTensorsFile(path: casePath(name, "base/model.safetensors")), ours = try SafeTensorsFile(path: merged)
            // The plan is checked against PEFT: what PEFT changed is planned, and not everything is.
            let peft = try SafeTensorsFile(path: casePath(name, "merged/model.safetensors"))
            for tensor in base.tensors {
                if let reference = peft.entry(named: tensor.name), try peft.bytes(of: reference) != (try base.bytes(of: tensor)) {
                    XCTAssertTrue(changed.contains(tensor.name), "\(name): PEFT changed \(tensor.name), the plan does not")
                }
            }
            XCTAssertLessThan(changed.count, base.tensors.count, "\(name): some tensors are left as they are")
            for tensor in base.tensors where !changed.contains(tensor.name) {
                let copy = try XCTUnwrap(ours.entry(named: tensor.name), "\(name): \(tensor.name)")
                XCTAssertEqual(try ours.bytes(of: copy), try base.bytes(of: tensor), "\(name): \(tensor.name) copied as it was")
            }

            // A file for a file, with the same bytes.
            let single = folder.file("single.safetensors")
            try run([casePath(name, "base/model.safetensors"), casePath(name, "adapter"), single, "--quiet", "--threads", "1"])
            XCTAssertEqual(FileManager.default.contents(atPath: single), FileManager.default.contents(atPath: merged), name)
        }
    }

    // MARK: - Documentation

    /// docs/CLI.md's `## merge-lora` section, and its fenced blocks.
    private func documentation() throws -> (text: String, blocks: [String]) {
        let cli = try String(contentsOfFile: Fixtures.repositoryRoot + "/docs/CLI.md", encoding: .utf8)
        let start = try XCTUnwrap(cli.range(of: "\n## merge-lora\n"), "docs/CLI.md has a merge-lora section")
        var section = String(cli[start.upperBound...])
        if let next = section.range(of: "\n## ") { section = String(section[..<next.lowerBound]) }
        let pieces = section.components(separatedBy: "```")
        // Odd pieces are inside fences; drop the info string (json) line.
        let blocks = stride(from: 1, to: pieces.count, by: 2).map { i -> String in
            let block = pieces[i]
            return block.firstIndex(of: "\n").map { String(block[block.index(after: $0)...]) } ?? block
        }
        return (section, blocks)
    }

    /// The section documents every option, the dry run as the command prints
    /// it, and the --json report with the fields and order the command writes.
    func testCLIDocumentationMatchesTheCommand() throws {
        let (text, blocks) = try documentation()
        XCTAssertFalse(text.contains("See the section added"), "the placeholder is replaced")
        let help = try runQConv(["merge-lora", "--help"])
        XCTAssertEqual(help.status, 0)
        let options = help.stdout.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.drop { $0 == " " }
            guard line.hasPrefix("  --"), let option = trimmed.split(separator: " ").first, option != "--help" else { return nil }
            return String(option)
        }
        XCTAssertGreaterThanOrEqual(options.count, 9, help.stdout)
        for option in options { XCTAssertTrue(text.contains("`\(option)"), "\(option) is documented") }
        for code in ["0", "2", "3", "4"] { XCTAssertTrue(text.contains("\(code):"), "exit code \(code)") }

        // The dry run, run where the documentation's paths start.
        let base = "Samples/lora_llama_basic/base", adapter = "Samples/lora_llama_basic/adapter"
        let dryRun = try runQConv(["merge-lora", base, adapter, "--dry-run"], currentDirectory: Fixtures.repositoryRoot)
        XCTAssertEqual(dryRun.status, 0, dryRun.stderr)
        XCTAssertTrue(blocks.contains(dryRun.stdout), "the documented dry run is the real one:\n\(dryRun.stdout)")

        // The JSON example: the same fields in the same order as the real report.
        let folder = TemporaryDirectory("qconv-merge-lora")
        let merged = try runQConv(["merge-lora", base, adapter, folder.file("merged"), "--json"], currentDirectory: Fixtures.repositoryRoot)
        XCTAssertEqual(merged.status, 0, merged.stderr)
        let real = try XCTUnwrap(JSONParser.parse(merged.stdout).objectValue)
        let example = try XCTUnwrap(blocks.compactMap { try? JSONParser.parse($0).objectValue }.first, "a JSON example")
        XCTAssertEqual(example.keys, real.keys)
        XCTAssertEqual(example["mapping"]?.objectValue?.keys, real["mapping"]?.objectValue?.keys)
        let exampleChange = try XCTUnwrap(example["changes"]?.arrayValue?.first?.objectValue)
        let realChange = try XCTUnwrap(real["changes"]?.arrayValue?.first?.objectValue)
        XCTAssertEqual(exampleChange.keys, realChange.keys)
        XCTAssertEqual(exampleChange, realChange, "the example's change is the real first one")
        for key in real.keys + exampleChange.keys { XCTAssertTrue(text.contains("`\(key)`"), "field \(key) is described") }
        // The documented text output of a merge (its OUT aside).
        let textRun = try runQConv(["merge-lora", base, adapter, folder.file("text")], currentDirectory: Fixtures.repositoryRoot)
        XCTAssertEqual(textRun.status, 0, textRun.stderr)
        let documented = try XCTUnwrap(blocks.first { $0.contains("merged 4 tensors into") })
        XCTAssertEqual(textRun.stdout.replacingOccurrences(of: folder.file("text"), with: "merged"), documented)
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

    /// A copy of a case's F32 adapter folder with some tensors' values replaced.
    private func craftAdapterValues(_ name: String, in folder: TemporaryDirectory, as adapterName: String = "adapter",
                                    _ transform: (TensorInfo, [Float]) -> [Float]) throws -> String {
        let path = folder.file(adapterName)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: casePath(name, "adapter/adapter_config.json"), toPath: path + "/adapter_config.json")
        let file = try SafeTensorsFile(path: casePath(name, "adapter/adapter_model.safetensors"))
        let writer = try CheckpointWriter(destination: path + "/adapter_model.safetensors", layout: .file, tensors: file.tensors.map(\.info),
                                          metadata: file.header.metadata, overwrite: true, inputs: [])
        for entry in file.tensors {
            XCTAssertEqual(entry.info.dtype, .f32)
            let values = transform(entry.info, floats(try file.bytes(of: entry)))
            try values.withUnsafeBytes { try writer.write($0) }
        }
        try writer.commit()
        return path
    }

    /// Whatever the base (model folder, file, container written as a
    /// container or as safetensors), a merged value that is not finite fails
    /// the merge naming the tensor, and nothing is written, unless --allow-nonfinite.
    func testNonFiniteMergedValuesAreRefusedUnlessAllowed() throws {
        let folder = TemporaryDirectory("qconv-merge-lora")
        let module = "model.layers.0.self_attn.q_proj"
        // 8 products of 1e20 · 1e20 overflow float32: every merged value of q_proj is infinite.
        let adapter = try craftAdapterValues("lora_llama_basic", in: folder) { info, values in
            info.name.contains(module + ".lora_") ? values.map { _ in 1e20 } : values
        }
        let base = casePath("lora_llama_basic", "base")
        for (method, arguments) in [("nf4", ["to-nf4"]), ("int8", ["to-int8"]), ("raw", ["to-nf4", "--skip", "*q_proj*"])] {
            let result = try runQConv(arguments + [base, folder.file("base-\(method).qc"), "--quiet"])
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        let runs: [(base: String, out: String, extra: [String], message: String)] = [
            (base, "out-folder", [], "the merged values hold 4096 NaN or infinite values"),
            (base + "/model.safetensors", "out.safetensors", [], "the merged values hold 4096 NaN or infinite values"),
            (folder.file("base-nf4.qc"), "out-nf4.qc", [], "the merged values are not finite: element 0 is inf, and quantizing it again to nf4 needs finite values"),
            (folder.file("base-int8.qc"), "out-int8.qc", [], "the merged values are not finite: element 0 is inf, and quantizing it again to int8 needs finite values"),
            (folder.file("base-raw.qc"), "out-raw.qc", [], "the merged values hold 4096 NaN or infinite values"),
            (folder.file("base-nf4.qc"), "out-dequantized", ["--dequantize"], "the merged values hold 4096 NaN or infinite values"),
        ]
        for run in runs {
            let out = folder.file(run.out)
            let refused = try runQConv(["merge-lora", run.base, adapter, out] + run.extra)
            XCTAssertEqual(refused.status, 3, "\(run.out): \(refused.stderr)")
            // The merged tensor is named, not the base file, which is fine.
            XCTAssertTrue(refused.stderr.hasPrefix("qconv: error: tensor '\(module).weight': " + run.message), "\(run.out): \(refused.stderr)")
            XCTAssertTrue(refused.stderr.contains("--allow-nonfinite"), refused.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), run.out)
            XCTAssertEqual(folder.contents().filter { $0.contains("qconv-tmp") }, [], run.out)

            let allowed = try runQConv(["merge-lora", run.base, adapter, out, "--allow-nonfinite", "--quiet"] + run.extra)
            XCTAssertEqual(allowed.status, 0, "\(run.out): \(allowed.stderr)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: out), run.out)
        }
        // The written safetensors hold the infinities.
        let merged = try Checkpoint(path: folder.file("out.safetensors"))
        XCTAssertEqual(Set(try XCTUnwrap(merged.tensor(named: module + ".weight")).stored.allFloats()), [.infinity])

        // Finite merged values past float16's range: int8 quantizes float16 values.
        let large = try craftAdapterValues("lora_llama_basic", in: folder, as: "large") { info, values in
            info.name.contains(module + ".lora_") ? values.map { _ in 66 } : values
        }
        let out = folder.file("out-large.qc")
        let refused = try runQConv(["merge-lora", folder.file("base-int8.qc"), large, out])
        XCTAssertEqual(refused.status, 3, refused.stderr)
        XCTAssertTrue(refused.stderr.hasPrefix("qconv: error: tensor '\(module).weight': merged element 0 is 6969"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("overflows float16"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try runQConv(["merge-lora", folder.file("base-int8.qc"), large, out, "--allow-nonfinite", "--quiet"]).status, 0)
        // The same values are fine for nf4, which scales by the block's absmax.
        XCTAssertEqual(try runQConv(["merge-lora", folder.file("base-nf4.qc"), large, folder.file("out-large-nf4.qc"), "--quiet"]).status, 0)
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
                                          metadata: source.metadata, sideFiles: [try SideFile(path: casePath("lora_llama_basic", "base/config.json"), name: "config.json")],
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
