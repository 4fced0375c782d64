import Foundation
import QConvTestSupport
import XCTest

/// `--part K/N`: parts of a job array, run at once, on one folder or on
/// folders copied together afterwards, give the folder one run gives.
final class PartsCLITests: XCTestCase {
    let sample = Fixtures.sample("sharded_llama")

    /// Every file of a folder (relative path -> bytes), hidden files included.
    private func contents(_ folder: String) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: folder)
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: folder + "/" + path, isDirectory: &isDirectory)
            if !isDirectory.boolValue { files[path] = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + path)) }
        }
        return files
    }

    /// Runs `arguments + ["--part", "K/N"]` for every K at once, each into `destination(K)`.
    private func runParts(_ arguments: [String], count: Int, destination: (Int) -> String) throws {
        let processes = try (1...count).map { k -> Process in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
            process.arguments = arguments + [destination(k), "--part", "\(k)/\(count)", "--quiet"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        for process in processes {
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, "\(process.arguments ?? [])")
        }
    }

    private func assertPartsEqualOneRun(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let directory = TemporaryDirectory()
        let whole = try runQConv(arguments + [directory.file("whole"), "--quiet"])
        XCTAssertEqual(whole.status, 0, whole.stderr, file: file, line: line)
        let expected = try contents(directory.file("whole"))
        XCTAssertGreaterThan(expected.keys.filter { $0.hasSuffix(".safetensors") }.count, 3, "several shards", file: file, line: line)
        for count in [1, 2, 3, 7] {
            // Into one folder, all parts at once.
            try runParts(arguments, count: count) { _ in directory.file("shared\(count)") }
            XCTAssertEqual(try contents(directory.file("shared\(count)")), expected, "\(count) parts into one folder", file: file, line: line)
            // Into separate folders, copied together afterwards.
            try runParts(arguments, count: count) { directory.file("separate\(count)-\($0)") }
            let merged = directory.file("merged\(count)")
            try FileManager.default.createDirectory(atPath: merged, withIntermediateDirectories: false)
            for k in 1...count {
                for (name, data) in try contents(directory.file("separate\(count)-\(k)")) {
                    try FileManager.default.createDirectory(atPath: (merged + "/" + name as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    try data.write(to: URL(fileURLWithPath: merged + "/" + name))
                }
            }
            XCTAssertEqual(try contents(merged), expected, "\(count) parts copied together", file: file, line: line)
            XCTAssertEqual(try runQConv(["verify", merged]).status, 0, file: file, line: line)
        }
    }

    func testDequantInPartsEqualsOneRun() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        try assertPartsEqualOneRun(["dequant", directory.file("m.qc"), "--max-shard-size", "200kB"])
    }

    func testToSafetensorsInPartsEqualsOneRun() throws {
        try assertPartsEqualOneRun(["to-safetensors", sample, "--dtype", "bf16", "--max-shard-size", "100kB"])
    }

    func testMergeInPartsEqualsOneRun() throws {
        // The sharded sample's own shards, mirrored; and sharded anew.
        let base = Fixtures.sample("lora_llama_basic")
        try assertPartsEqualOneRun(["merge-lora", base + "/base", base + "/adapter", "--max-shard-size", "20kB"])
    }

    func testBitsandbytesLayoutInPartsEqualsOneRun() throws {
        try assertPartsEqualOneRun(["to-nf4", sample, "--format", "hf", "--max-shard-size", "60kB"])
        try assertPartsEqualOneRun(["to-int8", sample, "--format", "hf", "--outlier-threshold", "0", "--max-shard-size", "60kB"])
    }

    func testAPartsShardsAreItsOwnAndAutoReadsTheScheduler() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let arguments = ["dequant", directory.file("m.qc"), directory.file("out"), "--max-shard-size", "200kB", "--quiet"]
        XCTAssertEqual(try runQConv(arguments + ["--part", "1/3"]).status, 0)
        let first = Set(try FileManager.default.contentsOfDirectory(atPath: directory.file("out")))
        XCTAssertTrue(first.contains("model.safetensors.index.json") && first.contains("config.json"))
        XCTAssertLessThan(first.filter { $0.hasSuffix(".safetensors") }.count, 11)
        // The folder is incomplete until every part ran: verify names what is missing.
        let incomplete = try runQConv(["verify", directory.file("out")])
        XCTAssertEqual(incomplete.status, 3)
        XCTAssertTrue(incomplete.stderr.contains("is listed in the index but missing from the folder"), incomplete.stderr)
        // Again without --force: its own shards exist.
        XCTAssertEqual(try runQConv(arguments + ["--part", "1/3"]).status, 2)
        XCTAssertEqual(try runQConv(arguments + ["--part", "1/3", "--force"]).status, 0)
        // The report says which shards this part wrote, in text and JSON.
        let text = try runQConv(Array(arguments.dropLast()) + ["--part", "1/3", "--force"])
        XCTAssertTrue(text.stdout.contains("part     1/3: 4 of 11 shards (model-00001-of-00011.safetensors ... model-00004-of-00011.safetensors)"), text.stdout)
        let json = try runQConv(Array(arguments.dropLast()) + ["--part", "1/3", "--force", "--json"])
        XCTAssertTrue(json.stdout.contains("\"part\": {\n    \"index\": 1,\n    \"count\": 3,"), json.stdout)
        XCTAssertTrue(json.stdout.contains("\"shard_count\": 11"), json.stdout)

        // Slurm: K = task id - min + 1, N = task count; a Kubernetes Indexed Job: K = index + 1, N given.
        // The part a run took, from its JSON report (nil when it failed).
        var partIndex: Int?
        func run(_ environment: [String: String], _ part: String, _ extra: [String] = []) throws -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
            process.arguments = arguments + ["--part", part, "--json"] + extra
            process.environment = environment
            process.standardError = FileHandle.nullDevice
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let json = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            partIndex = json.range(of: #""index": [0-9]+"#, options: .regularExpression).map { Int(json[$0].dropFirst(9)) ?? -1 }
            return process.terminationStatus
        }
        XCTAssertEqual(try run(["SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"], "auto"), 0)
        XCTAssertEqual(partIndex, 2)
        XCTAssertEqual(try run(["JOB_COMPLETION_INDEX": "2"], "auto/3"), 0)
        XCTAssertEqual(partIndex, 3)
        // --array=5-9:2 runs tasks 5, 7, 9: task 7 is part 2.
        XCTAssertEqual(try run(["SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "3"], "auto", ["--force"]), 0)
        XCTAssertEqual(partIndex, 2)
        XCTAssertEqual(try run(["SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "3"], "auto"), 2)
        XCTAssertEqual(try runQConv(["verify", directory.file("out")]).status, 0, "parts 1, 2 and 3 make the whole folder")
        XCTAssertEqual(try run(["JOB_COMPLETION_INDEX": "2"], "auto"), 2, "N is not in the environment")
        XCTAssertEqual(try run([:], "auto/3"), 2, "no scheduler")
        XCTAssertEqual(try runQConv(arguments + ["--part", "4/3"]).status, 2)
    }

    /// Samples/scaling/convert-in-parts.sh, the plain-shell example of docs/SCALING.md.
    func testThePlainShellExampleRunsThePartsAndChecksTheFolder() throws {
        let directory = TemporaryDirectory()
        let arguments = ["to-nf4", sample, directory.file("parts"), "--format", "hf", "--max-shard-size", "60kB"]
        func script(_ count: Int, _ out: String, _ arguments: [String]) throws -> (status: Int32, stdout: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [Fixtures.sample("scaling/convert-in-parts.sh"), "\(count)", out, qconvExecutablePath] + arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let run = try script(4, directory.file("parts"), arguments)
        XCTAssertEqual(run.status, 0)
        XCTAssertTrue(run.stdout.hasPrefix(directory.file("parts") + ": ok: 21 tensors, 6 shards"), run.stdout)
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("whole"), "--format", "hf",
                                           "--max-shard-size", "60kB", "--quiet"]).status, 0)
        XCTAssertEqual(try contents(directory.file("parts")), try contents(directory.file("whole")))
        // A part that fails fails the script.
        XCTAssertNotEqual(try script(2, directory.file("parts"), arguments).status, 0, "the shards exist and there is no --force")
    }

    func testAContainerHasNoParts() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let merge = try runQConv(["merge-lora", directory.file("m.qc"), Fixtures.sample("lora_llama_basic/adapter"), directory.file("o.qc"), "--part", "1/2"])
        XCTAssertEqual(merge.status, 2)
        XCTAssertTrue(merge.stderr.contains("need a folder output"), merge.stderr)
        let convert = try runQConv(["to-nf4", sample, directory.file("p.qc"), "--part", "1/2"])
        XCTAssertEqual(convert.status, 2)
        XCTAssertTrue(convert.stderr.contains("a container is one file (pass --format hf)"), convert.stderr)
        // Nor is one .safetensors file.
        for arguments in [["dequant", directory.file("m.qc")], ["to-safetensors", sample], ["to-nf4", sample, "--format", "hf"],
                          ["merge-lora", Fixtures.sample("lora_llama_basic/base"), Fixtures.sample("lora_llama_basic/adapter")]] {
            let file = try runQConv(arguments + [directory.file("one.safetensors"), "--part", "1/2"])
            XCTAssertEqual(file.status, 2, "\(arguments)")
            XCTAssertTrue(file.stderr.contains("one.safetensors names one .safetensors file: give OUT a folder name"), file.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("one.safetensors")))
    }

    /// A part killed with SIGKILL mid-way leaves a hidden temporary shard;
    /// running it again with `--force` removes that (saying so), and the
    /// folder is the one a single run makes.
    func testAKilledPartRerunWithForceGivesTheSameFolder() throws {
        let directory = TemporaryDirectory()
        let input = directory.file("big.safetensors")
        // 32 MB of F32 in 16 tensors: long enough to be killed mid-way in a debug build.
        let rows = 512, columns = 1024, size = rows * columns * 4
        let tensors = (0..<16).map { "\"model.layers.\($0).mlp.up_proj.weight\":{\"dtype\":\"F32\",\"shape\":[\(rows),\(columns)],\"data_offsets\":[\($0 * size),\(($0 + 1) * size)]}" }
        var data = [UInt8](repeating: 0, count: 16 * size)
        for i in stride(from: 0, to: data.count, by: 4) { data[i + 3] = 0x3C; data[i + 1] = UInt8(truncatingIfNeeded: i / 4) }
        writeFile(input, craftSafetensors(header: "{" + tensors.joined(separator: ",") + "}", data: data))
        let arguments = ["to-nf4", input, "--format", "hf", "--max-shard-size", "1MB", "--threads", "1", "--quiet"]
        XCTAssertEqual(try runQConv(arguments + [directory.file("whole")]).status, 0)

        let out = directory.file("out")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
        process.arguments = arguments + [out, "--part", "1/2"]
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        let temporary = { ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).contains { $0.contains(".qconv-tmp-") } }
        while !temporary() && process.isRunning && Date() < deadline { usleep(500) }
        XCTAssertTrue(process.isRunning, "part 1 finished before it could be killed")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertTrue(temporary(), "the killed part left its temporary shard")

        let rerun = try runQConv(Array(arguments.dropLast()) + [out, "--part", "1/2", "--force"])
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertTrue(rerun.stderr.contains("qconv: note: removed \(out)/."), rerun.stderr)
        XCTAssertEqual(try runQConv(arguments + [out, "--part", "2/2"]).status, 0)
        XCTAssertEqual(try contents(out), try contents(directory.file("whole")))
    }
}
