import Foundation
import XCTest
import QConvKit
import QConvTestSupport

final class InspectCLITests: XCTestCase {
    func testInspectShardedSampleAsJSON() throws {
        let result = try runQConv(["inspect", Fixtures.sample("sharded_llama"), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("\"tensor_count\": 21"), result.stdout)
        XCTAssertTrue(result.stdout.contains("\"parameter_count\": 391808"), result.stdout)
    }

    // MARK: - Helpers

    private func json(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        return try XCTUnwrap(object as? [String: Any], file: file, line: line)
    }

    private func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    /// Exit 3, nothing on stdout, and one `qconv: error:` line naming `mentions`.
    private func assertRejected(_ path: String, mentions: [String], _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try runQConv(["inspect", path])
        XCTAssertEqual(result.status, 3, "\(name): \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.stdout, "", name, file: file, line: line)
        let errorLines = lines(result.stderr)
        XCTAssertEqual(errorLines.count, 1, "\(name): \(result.stderr)", file: file, line: line)
        XCTAssertTrue(result.stderr.hasPrefix("qconv: error: "), "\(name): \(result.stderr)", file: file, line: line)
        XCTAssertTrue(result.stderr.hasSuffix("\n"), name, file: file, line: line)
        for text in mentions {
            XCTAssertTrue(result.stderr.contains(text), "\(name): '\(text)' not in \(result.stderr)", file: file, line: line)
        }
    }

    // MARK: - Every validation rule, end to end

    func testEveryInvalidSafetensorsFileExitsThreeWithOneErrorLine() throws {
        let root = TemporaryDirectory()
        for input in CraftedInputs.invalidSafetensors {
            let path = input.create(in: root.path)
            try assertRejected(path, mentions: [path] + (input.tensor.map { ["'\($0)'"] } ?? []), input.name)
        }
    }

    func testEveryInvalidModelFolderExitsThreeWithOneErrorLine() throws {
        let root = TemporaryDirectory()
        for input in CraftedInputs.invalidModelFolders {
            let path = input.create(in: root.path)
            try assertRejected(path, mentions: [path] + (input.tensor.map { ["'\($0)'"] } ?? []), input.name)
        }
    }

    func testValidCraftedFilesAreInspected() throws {
        let root = TemporaryDirectory()
        for input in CraftedInputs.valid {
            let path = input.create(in: root.path)
            let result = try runQConv(["inspect", path, "--tensors", "--json"])
            XCTAssertEqual(result.status, 0, "\(input.name): \(result.stderr)")
            XCTAssertEqual(result.stderr, "", input.name)
            let report = try json(result.stdout)
            XCTAssertEqual(report["format"] as? String, "safetensors", input.name)
        }
    }

    /// Corruptions of a valid file: the binary reports them (exit 3, one line)
    /// or accepts them (exit 0); it never crashes.
    func testMutatedFilesNeverCrashTheBinary() throws {
        let original = craftSafetensors(
            header: "{\"__metadata__\":{\"format\":\"pt\"},\"a\":\(tensorEntry("F16", [2, 3], 0, 12)),\"b\":\(tensorEntry("BF16", [], 12, 14)),\"c\":\(tensorEntry("F32", [1], 14, 18))}",
            data: (0..<18).map { UInt8($0) })
        let folder = TemporaryDirectory()
        var statuses: [Int32: Int] = [:]
        for (i, bytes) in mutations(of: original, count: 48, seed: 0xC11).enumerated() {
            let path = folder.file("mutant\(i).safetensors")
            writeFile(path, bytes)
            let result = try runQConv(["inspect", path, "--stats"])
            statuses[result.status, default: 0] += 1
            XCTAssertTrue(result.status == 0 || result.status == 3, "mutant \(i): status \(result.status) \(result.stderr)")
            if result.status == 3 {
                XCTAssertEqual(lines(result.stderr).count, 1, "mutant \(i): \(result.stderr)")
                XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(path): "), "mutant \(i): \(result.stderr)")
            } else {
                XCTAssertEqual(result.stderr, "", "mutant \(i)")
            }
        }
        XCTAssertGreaterThan(statuses[3, default: 0], 24)
    }

    // MARK: - Command-line conventions

    func testHelpAndVersion() throws {
        let help = try runQConv(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("usage: qconv COMMAND"), help.stdout)
        XCTAssertTrue(help.stdout.contains("  inspect "), help.stdout)
        XCTAssertEqual(help.stderr, "")

        let inspectHelp = try runQConv(["inspect", "--help"])
        XCTAssertEqual(inspectHelp.status, 0)
        XCTAssertTrue(inspectHelp.stdout.contains("usage: qconv inspect PATH [options]"), inspectHelp.stdout)
        for option in ["--tensors", "--stats", "--json", "--quiet", "--threads N", "--help"] {
            XCTAssertTrue(inspectHelp.stdout.contains("  " + option), option)
        }
        XCTAssertEqual(inspectHelp.stderr, "")

        let version = try runQConv(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.stdout, "qconv 0.1.0\n")
        XCTAssertEqual(version.stdout, "qconv \(QConvVersion.string)\n")

        let nothing = try runQConv([])
        XCTAssertEqual(nothing.status, 2)
        XCTAssertEqual(nothing.stdout, "")
        XCTAssertTrue(nothing.stderr.contains("usage: qconv COMMAND"))
    }

    func testUsageErrorsExitTwoWithOneErrorLine() throws {
        let sample = Fixtures.sample("sharded_llama")
        let cases: [([String], String)] = [
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["--frobnicate"], "unknown command '--frobnicate'"),
            (["inspect", sample, "--bogus"], "unknown option '--bogus' for 'qconv inspect'"),
            (["inspect"], "missing argument PATH"),
            (["inspect", sample, "extra"], "unexpected argument 'extra'"),
            (["inspect", sample, "--threads"], "--threads needs a value (N)"),
            (["inspect", sample, "--threads", "0"], "--threads expects an integer in 1...1024, got '0'"),
            (["inspect", sample, "--threads", "many"], "--threads expects an integer in 1...1024, got 'many'"),
            (["inspect", sample, "--threads", "2", "--threads", "3"], "--threads given more than once"),
            (["inspect", sample, "--json=yes"], "--json takes no value"),
        ]
        for (arguments, message) in cases {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertEqual(result.stdout, "", "\(arguments)")
            let errorLines = lines(result.stderr)
            XCTAssertEqual(errorLines.first, "qconv: error: " + message, "\(arguments)")
            XCTAssertLessThanOrEqual(errorLines.count, 2, "\(arguments): \(result.stderr)")
            if errorLines.count == 2 { XCTAssertTrue(errorLines[1].hasPrefix("  "), "\(arguments): \(result.stderr)") }
        }
    }

    func testOptionsAcceptBothSpellings() throws {
        let sample = Fixtures.sample("sharded_llama")
        let a = try runQConv(["inspect", sample, "--threads=2", "--json"])
        let b = try runQConv(["inspect", "--json", "--threads", "2", "--", sample])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.stdout, b.stdout)
    }

    func testMissingInputExitsFour() throws {
        let missing = "/nonexistent/qconv-test/model.safetensors"
        let result = try runQConv(["inspect", missing])
        XCTAssertEqual(result.status, 4)
        XCTAssertEqual(result.stdout, "")
        XCTAssertEqual(lines(result.stderr).count, 1, result.stderr)
        XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(missing): "), result.stderr)
    }

    func testQuietPrintsNothingButJSONStill() throws {
        let sample = Fixtures.sample("sharded_llama")
        let quiet = try runQConv(["inspect", sample, "--quiet"])
        XCTAssertEqual(quiet.status, 0)
        XCTAssertEqual(quiet.stdout, "")
        XCTAssertEqual(quiet.stderr, "")
        let quietJSON = try runQConv(["inspect", sample, "--quiet", "--json"])
        XCTAssertEqual(try json(quietJSON.stdout)["tensor_count"] as? Int, 21)
    }

    // MARK: - Reports

    func testJSONReportOfShardedSample() throws {
        let sample = Fixtures.sample("sharded_llama")
        let result = try runQConv(["inspect", sample, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stderr, "")
        let report = try json(result.stdout)
        XCTAssertEqual(report["path"] as? String, sample)
        XCTAssertEqual(report["format"] as? String, "safetensors-sharded-folder")
        XCTAssertEqual(report["tensor_count"] as? Int, 21)
        XCTAssertEqual(report["parameter_count"] as? Int, 391_808)
        XCTAssertEqual(report["tensor_bytes"] as? Int, 1_567_232)
        let files = try XCTUnwrap(report["files"] as? [[String: Any]])
        XCTAssertEqual(files.count, 11)
        XCTAssertEqual(files.compactMap { $0["name"] as? String }, (1...11).map { String(format: "model-%05d-of-00011.safetensors", $0) })
        var onDisk = 0
        for file in files {
            let name = try XCTUnwrap(file["name"] as? String)
            let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: sample + "/" + name)[.size] as? Int)
            XCTAssertEqual(file["bytes"] as? Int, size)
            onDisk += size
        }
        XCTAssertEqual(report["file_bytes"] as? Int, onDisk)
        XCTAssertEqual(files.compactMap { $0["tensor_count"] as? Int }.reduce(0, +), 21)
        XCTAssertEqual(report["auxiliary_files"] as? [String], ["config.json"])
        XCTAssertEqual(report["metadata"] as? [String: String], ["format": "pt"])
        let dtypes = try XCTUnwrap(report["dtypes"] as? [String: [String: Int]])
        XCTAssertEqual(dtypes, ["F32": ["tensor_count": 21, "parameter_count": 391_808, "bytes": 1_567_232]])
        XCTAssertNil(report["tensors"])
    }

    func testTensorListShowsEveryTensorWithItsShard() throws {
        let sample = Fixtures.sample("sharded_llama")
        let indexData = try Data(contentsOf: URL(fileURLWithPath: sample + "/model.safetensors.index.json"))
        let weightMap = try XCTUnwrap((JSONSerialization.jsonObject(with: indexData) as? [String: Any])?["weight_map"] as? [String: String])

        let text = try runQConv(["inspect", sample, "--tensors"])
        XCTAssertEqual(text.status, 0, text.stderr)
        let table = text.stdout.components(separatedBy: "\n\n")
        XCTAssertEqual(table.count, 2, text.stdout)
        let rows = lines(table[1])
        XCTAssertEqual(rows.count, 22, table[1])
        XCTAssertEqual(rows[0].split(separator: " ").map(String.init), ["NAME", "DTYPE", "SHAPE", "PARAMS", "BYTES", "FILE"])
        var seen = Set<String>()
        for row in rows.dropFirst() {
            let cells = row.split(separator: " ").map(String.init)
            XCTAssertEqual(cells.count, 6, row)
            XCTAssertEqual(weightMap[cells[0]], cells[5], row)
            XCTAssertEqual(cells[1], "F32", row)
            seen.insert(cells[0])
        }
        XCTAssertEqual(seen, Set(weightMap.keys))
        XCTAssertTrue(rows.contains { $0.hasPrefix("model.embed_tokens.weight ") && $0.contains(" [256,128] ") && $0.contains(" 32,768 ") && $0.contains(" 131,072 ") })

        let jsonResult = try runQConv(["inspect", sample, "--tensors", "--json"])
        let tensors = try XCTUnwrap(try json(jsonResult.stdout)["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.count, 21)
        for tensor in tensors {
            let name = try XCTUnwrap(tensor["name"] as? String)
            XCTAssertEqual(tensor["file"] as? String, weightMap[name], name)
            XCTAssertEqual(tensor["dtype"] as? String, "F32")
            let shape = try XCTUnwrap(tensor["shape"] as? [Int])
            XCTAssertEqual(tensor["parameters"] as? Int, shape.reduce(1, *))
            XCTAssertEqual(tensor["bytes"] as? Int, shape.reduce(4, *))
            XCTAssertNil(tensor["stats"])
        }
    }

    /// Statistics over a crafted F16 tensor with NaN and infinities, checked
    /// against a direct computation, plus a real tensor of the sample.
    func testStatisticsMatchADirectComputation() throws {
        let folder = TemporaryDirectory()
        let values: [Float16] = [1, -2, .nan, .infinity, -.infinity, 0.5, 3, -0.25, 65504, 0.000061035156]
        let halfBytes = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let path = folder.file("stats.safetensors")
        writeFile(path, craftSafetensors(
            header: "{\"h\":\(tensorEntry("F16", [2, 5], 0, 20)),\"idx\":\(tensorEntry("I32", [2], 20, 28)),\"none\":\(tensorEntry("BF16", [0], 28, 28))}",
            data: halfBytes + [UInt8](repeating: 1, count: 8)))

        let finite = values.filter(\.isFinite).map { Double($0) }
        let mean = finite.reduce(0, +) / Double(finite.count)
        let std = (finite.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(finite.count)).squareRoot()

        let result = try runQConv(["inspect", path, "--stats", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let tensors = try XCTUnwrap(try json(result.stdout)["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.map { $0["name"] as? String }, ["h", "idx", "none"])
        let stats = try XCTUnwrap(tensors[0]["stats"] as? [String: Any])
        XCTAssertEqual(stats["min"] as? Double, -2)
        XCTAssertEqual(stats["max"] as? Double, 65504)
        XCTAssertEqual(stats["absmax"] as? Double, 65504)
        XCTAssertEqual(try XCTUnwrap(stats["mean"] as? Double), mean, accuracy: abs(mean) * 1e-12)
        XCTAssertEqual(try XCTUnwrap(stats["std"] as? Double), std, accuracy: std * 1e-12)
        XCTAssertEqual(stats["nan_count"] as? Int, 1)
        XCTAssertEqual(stats["inf_count"] as? Int, 2)
        XCTAssertNil(tensors[1]["stats"], "an integer tensor has no float statistics")
        let empty = try XCTUnwrap(tensors[2]["stats"] as? [String: Any])
        XCTAssertTrue(empty["min"] is NSNull)
        XCTAssertEqual(empty["nan_count"] as? Int, 0)

        let text = try runQConv(["inspect", path, "--stats"])
        XCTAssertEqual(text.status, 0, text.stderr)
        let row = try XCTUnwrap(lines(text.stdout).first { $0.hasPrefix("h ") })
        let cells = row.split(separator: " ").map(String.init)
        XCTAssertEqual(Array(cells.suffix(7)), ["-2.000000", "65504.000000", String(format: "%.6f", mean), String(format: "%.6f", std), "65504.000000", "1", "2"])
        let idx = try XCTUnwrap(lines(text.stdout).first { $0.hasPrefix("idx ") }).split(separator: " ").map(String.init)
        XCTAssertEqual(Array(idx.suffix(7)), Array(repeating: "-", count: 7))
        let none = try XCTUnwrap(lines(text.stdout).first { $0.hasPrefix("none ") }).split(separator: " ").map(String.init)
        XCTAssertEqual(Array(none.suffix(7)), ["-", "-", "-", "-", "-", "0", "0"])
    }

    /// Exact numbers: Foundation's JSONSerialization on Linux may misround the
    /// last digit of a double, so the values are read with QConvKit's parser
    /// (number text kept) and converted by Swift's correctly rounded Double(String).
    func testStatisticsOfASampleTensor() throws {
        let sample = Fixtures.sample("lora_llama_basic/base/model.safetensors")
        let checkpoint = try Checkpoint(path: sample)
        let result = try runQConv(["inspect", sample, "--stats", "--json", "--threads", "2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertNoThrow(try json(result.stdout))
        let tensors = try XCTUnwrap(try JSONParser.parse(result.stdout).objectValue?["tensors"]?.arrayValue)
        XCTAssertEqual(tensors.count, checkpoint.tensors.count)
        for (row, tensor) in zip(tensors, checkpoint.tensors) {
            XCTAssertEqual(row.objectValue?["name"], .string(tensor.name))
            let stats = try XCTUnwrap(row.objectValue?["stats"]?.objectValue)
            func number(_ key: String) throws -> Double { try XCTUnwrap(stats[key]?.numberValue?.doubleValue, key) }
            let values = try tensor.stored.allFloats().map(Double.init)
            let mean = values.reduce(0, +) / Double(values.count)
            let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
            XCTAssertEqual(try number("min"), values.min(), tensor.name)
            XCTAssertEqual(try number("max"), values.max(), tensor.name)
            XCTAssertEqual(try number("absmax"), values.map(abs).max(), tensor.name)
            XCTAssertEqual(try number("mean"), mean, accuracy: 1e-12 + abs(mean) * 1e-9, tensor.name)
            XCTAssertEqual(try number("std"), std, accuracy: std * 1e-9, tensor.name)
            XCTAssertEqual(try number("nan_count"), 0)
            XCTAssertEqual(try number("inf_count"), 0)
        }
    }

    /// Names that need escaping survive the JSON report.
    func testJSONReportEscapesNames() throws {
        let path = Fixtures.path("foundation/python_escapes.safetensors")
        let result = try runQConv(["inspect", path, "--tensors", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.allSatisfy(\.isASCII))
        let report = try json(result.stdout)
        let names = try XCTUnwrap(report["tensors"] as? [[String: Any]]).compactMap { $0["name"] as? String }
        XCTAssertEqual(names, try SafeTensorsFile(path: path).tensors.map(\.name))
        XCTAssertEqual((report["metadata"] as? [String: String])?["note"], "é\n\u{01}\"\\ 😀")
    }

    /// Every sample and fixture in the repository inspects cleanly.
    func testEveryRepositoryFileAndFolderInspects() throws {
        var paths: [String] = []
        let fileManager = FileManager.default
        for root in [Fixtures.path(""), Fixtures.sample("")] {
            guard let walker = fileManager.enumerator(atPath: root) else { continue }
            var folders = Set<String>()
            while let relative = walker.nextObject() as? String {
                guard relative.hasSuffix(".safetensors") else { continue }
                let path = root + relative
                paths.append(path)
                folders.insert((path as NSString).deletingLastPathComponent)
            }
            // Folders of model files (not fixture collections of single files).
            for folder in folders where fileManager.fileExists(atPath: folder + "/config.json") || fileManager.fileExists(atPath: folder + "/adapter_config.json") {
                paths.append(folder)
            }
        }
        XCTAssertGreaterThanOrEqual(paths.count, 19)
        XCTAssertTrue(paths.contains(Fixtures.sample("sharded_llama")))
        // transformers' bitsandbytes layouts (copies of shared/refdata/models/hf_*).
        for name in ["hf_fp32_llama", "hf_bnb_nf4_dq", "hf_bnb_fp4", "hf_bnb_int8"] {
            XCTAssertTrue(paths.contains(Fixtures.path("models/" + name)), name)
        }
        for path in paths {
            let result = try runQConv(["inspect", path, "--json"])
            XCTAssertEqual(result.status, 0, "\(path): \(result.stderr)")
            XCTAssertEqual(result.stderr, "", path)
            XCTAssertGreaterThan(try json(result.stdout)["tensor_count"] as? Int ?? 0, 0, path)
        }
    }

    /// Without --stats only the header is read: a 64 GiB file (sparse, so it
    /// costs no disk) inspects like a small one, and exactly as declared.
    func testInspectReadsOnlyTheHeaderOfAHugeFile() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("huge.safetensors")
        let elements: UInt64 = 16 << 30, bytes = elements * 4
        let header = #"{"w":{"dtype":"F32","shape":[\#(elements)],"data_offsets":[0,\#(bytes)]}}"#
        writeFile(path, craftSafetensors(header: header))
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: 8 + UInt64(header.utf8.count) + bytes)
        try handle.close()
        let result = try runQConv(["inspect", path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try json(result.stdout)
        XCTAssertEqual(report["parameter_count"] as? Int, Int(elements))
        XCTAssertEqual(report["tensor_bytes"] as? Int, Int(bytes))
    }

    /// transformers' on-disk layout of bitsandbytes checkpoints reads as the
    /// model it holds: each quantized weight is one tensor with its source
    /// dtype and shape and its scheme; the pieces (absmax, quant_map, quant
    /// state, SCB, weight_format) are not listed as tensors.
    func testBitsandbytesCheckpointsInspectAsTheirWeights() throws {
        let nf4 = try json(try runQConv(["inspect", Fixtures.path("models/hf_bnb_nf4_dq"), "--tensors", "--json"]).stdout)
        XCTAssertEqual(nf4["format"] as? String, "bitsandbytes-folder")
        let nf4Tensors = try XCTUnwrap(nf4["tensors"] as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: nf4Tensors.compactMap { t in (t["name"] as? String).map { ($0, t) } })
        let weight = try XCTUnwrap(byName["model.layers.0.self_attn.q_proj.weight"])
        XCTAssertEqual(weight["dtype"] as? String, "F32")
        XCTAssertEqual(weight["shape"] as? [Int], [128, 128])
        XCTAssertEqual(weight["scheme"] as? String, "nf4")
        XCTAssertEqual(weight["block_size"] as? Int, 64)
        XCTAssertEqual(weight["double_quant"] as? Bool, true)
        XCTAssertEqual(weight["bits_per_weight"] as? Double, Double(8192 + 256 + 4) * 8 / 16384)
        let summary = try XCTUnwrap(nf4["bitsandbytes"] as? [String: Any])
        XCTAssertEqual(summary["schemes"] as? [String: Int], ["nf4, block size 64, double quant": 14])
        XCTAssertEqual((summary["quantization_config"] as? [String: Any])?["bnb_4bit_compute_dtype"] as? String, "bfloat16")
        for suffix in [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4"] {
            XCTAssertNil(byName["model.layers.0.self_attn.q_proj.weight" + suffix], suffix)
        }
        XCTAssertEqual(nf4Tensors.count, 21)
        let int8 = try json(try runQConv(["inspect", Fixtures.path("models/hf_bnb_int8"), "--tensors", "--json"]).stdout)
        let int8Tensors = try XCTUnwrap(int8["tensors"] as? [[String: Any]])
        let q = try XCTUnwrap(int8Tensors.first { $0["name"] as? String == "model.layers.0.self_attn.q_proj.weight" })
        XCTAssertEqual(q["scheme"] as? String, "int8")
        XCTAssertEqual(q["outlier_columns"] as? Int, 0)
        XCTAssertNil(int8Tensors.first { $0["name"] as? String == "model.layers.0.self_attn.q_proj.SCB" })
        XCTAssertEqual(int8Tensors.count, 21)

        let text = try runQConv(["inspect", Fixtures.path("hf_bnb/fp4_bf16")])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("format       bitsandbytes-folder"), text.stdout)
        XCTAssertTrue(text.stdout.contains("schemes      fp4, block size 64: 14"), text.stdout)
        XCTAssertTrue(text.stdout.contains("bits/weight  4.500 quantized tensors"), text.stdout)
        XCTAssertTrue(text.stdout.contains("bnb_4bit_quant_type=fp4"), text.stdout)
    }

    /// `inspect --tensors` of an int8 container shows each tensor's outlier
    /// column count, in text and JSON: here the columns holding an element with
    /// |w| >= 0.06 (as float16), counted from the original weights.
    func testTensorListShowsInt8OutlierColumnsPerTensor() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        let container = directory.file("int8.qc")
        let convert = try runQConv(["to-int8", sample, container, "--outlier-threshold", "0.06", "--quiet"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let original = try Checkpoint(path: sample)
        let threshold = Float(Float16(Float(0.06)))
        var expected: [String: Int] = [:]
        for tensor in original.tensors where tensor.info.shape.count >= 2 && !TensorSelection.isLeftUnquantizedByDefault(tensor.name) {
            let values = try tensor.stored.allFloats().map { Float(Float16($0)) }
            let columns = tensor.info.matrixShape.columns
            expected[tensor.name] = Set(values.indices.filter { abs(values[$0]) >= threshold }.map { $0 % columns }).count
        }
        XCTAssertEqual(expected.count, 14)
        XCTAssertTrue(expected.values.contains { $0 > 0 }, "the threshold must split columns off")
        XCTAssertGreaterThan(Set(expected.values).count, 1, "counts differ between tensors")

        let jsonResult = try runQConv(["inspect", container, "--tensors", "--json"])
        XCTAssertEqual(jsonResult.status, 0, jsonResult.stderr)
        let rows = try XCTUnwrap(try json(jsonResult.stdout)["tensors"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 21)
        for row in rows {
            let name = try XCTUnwrap(row["name"] as? String)
            if let count = expected[name] {
                XCTAssertEqual(row["scheme"] as? String, "int8", name)
                XCTAssertEqual(row["outlier_columns"] as? Int, count, name)
            } else {
                XCTAssertEqual(row["scheme"] as? String, "raw", name)
                XCTAssertNil(row["outlier_columns"], "\(name): only int8 tensors have outlier columns")
            }
        }

        let text = try runQConv(["inspect", container, "--tensors"])
        XCTAssertEqual(text.status, 0, text.stderr)
        let table = lines(text.stdout.components(separatedBy: "\n\n").last ?? "")
        XCTAssertEqual(table.first?.split(separator: " ").map(String.init), ["NAME", "DTYPE", "SHAPE", "PARAMS", "SCHEME", "BITS/W", "OUTLIERS", "BYTES"])
        var listed = 0
        for row in table.dropFirst() {
            let cells = row.split(separator: " ").map(String.init)
            guard let count = expected[cells[0]] else {
                XCTAssertEqual(cells.count, 7, "\(row): a raw tensor has no OUTLIERS cell")
                continue
            }
            XCTAssertEqual(cells.count, 8, row)
            XCTAssertEqual(cells[4], "int8", row)
            XCTAssertEqual(cells[6], String(count), row)
            listed += 1
        }
        XCTAssertEqual(listed, 14)
    }
}
