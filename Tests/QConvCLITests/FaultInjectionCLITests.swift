import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Faults through the binary on a 150 MB model the tests write: kill -9 and
/// SIGINT at random points of to-nf4, dequant and merge-lora (the
/// destination never partial, the inputs unchanged, the stale temporaries of
/// a killed run removed by the next run), an input truncated during a run,
/// and two runs writing one destination at once. A full disk is in
/// DiskFullCLITests.
final class FaultInjectionCLITests: XCTestCase {
    /// Made once for the class: a model folder (16 F16 matrices of 2048 x 2304,
    /// 151 MB), the same as a container of raw tensors, and an adapter for it.
    private struct Inputs {
        let directory: TemporaryDirectory
        var model: String { directory.file("model") }
        var raw: String { directory.file("raw.qc") }
        var adapter: String { directory.file("adapter") }
        /// Small inputs for the runs that follow a killed one.
        let sample = Fixtures.sample("sharded_llama")
        var smallContainer: String { directory.file("small.qc") }
        let smallBase = Fixtures.sample("lora_llama_basic/base")
        let smallAdapter = Fixtures.sample("lora_llama_basic/adapter")
    }

    private nonisolated(unsafe) static var made: Inputs?

    /// The inputs could not be made: the test fails with this.
    private struct FaultInputsError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    private var inputs: Inputs {
        get throws {
            if let made = Self.made { return made }
            let made = try Self.makeInputs()
            Self.made = made
            return made
        }
    }

    override class func tearDown() {
        made = nil
        super.tearDown()
    }

    private static let rows = 2048, columns = 2304
    private static let modules = (0..<4).flatMap { layer in
        ["self_attn.q_proj", "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"].map { "model.layers.\(layer).\($0)" }
    }

    private static func makeInputs() throws -> Inputs {
        let inputs = Inputs(directory: TemporaryDirectory("qconv-faults"))
        try FileManager.default.createDirectory(atPath: inputs.model, withIntermediateDirectories: false)
        // Values of about 0.02 in float16, repeated from a 128 KB pattern.
        var rng = SplitMix64(seed: 17)
        let pattern: [UInt16] = (0..<65_536).map { _ in Float16(Float.random(in: -0.05...0.05, using: &rng)).bitPattern.littleEndian }
        let tensorBytes = rows * columns * 2
        try writeSafetensors(inputs.model + "/model.safetensors", tensors: modules.map { ($0 + ".weight", "F16", [rows, columns], tensorBytes) }) { handle in
            let chunk = pattern.withUnsafeBytes { Data($0) }
            for _ in 0..<(modules.count * tensorBytes / chunk.count) { handle.write(chunk) }
        }
        writeFile(inputs.model + "/config.json", Array(#"{"model_type": "llama"}"#.utf8))
        // A LoRA adapter (r = 8) on every q_proj and down_proj.
        try FileManager.default.createDirectory(atPath: inputs.adapter, withIntermediateDirectories: false)
        let adapted = modules.filter { $0.hasSuffix("q_proj") || $0.hasSuffix("down_proj") }
        var factors: [(String, String, [Int], Int)] = []
        for module in adapted {
            factors.append(("base_model.model.\(module).lora_A.weight", "F32", [8, columns], 8 * columns * 4))
            factors.append(("base_model.model.\(module).lora_B.weight", "F32", [rows, 8], rows * 8 * 4))
        }
        try writeSafetensors(inputs.adapter + "/adapter_model.safetensors", tensors: factors) { handle in
            for (_, _, shape, _) in factors {
                let values = (0..<(shape[0] * shape[1])).map { _ in Float.random(in: -0.01...0.01, using: &rng).bitPattern.littleEndian }
                handle.write(values.withUnsafeBytes { Data($0) })
            }
        }
        writeFile(inputs.adapter + "/adapter_config.json", Array(#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16}"#.utf8))
        for (arguments, what) in [(["to-nf4", inputs.model, inputs.raw, "--skip", "*"], "the raw container"),
                                  (["to-nf4", inputs.sample, inputs.smallContainer], "the small container")] {
            let result = try runQConv(arguments + ["--quiet"])
            // A failure here is a failure of to-nf4, not a reason to skip the fault tests.
            guard result.status == 0 else { throw FaultInputsError(message: "cannot make \(what): \(result.stderr)") }
        }
        return inputs
    }

    private static func writeSafetensors(_ path: String, tensors: [(name: String, dtype: String, shape: [Int], bytes: Int)],
                                         data: (FileHandle) -> Void) throws {
        var offset = 0
        let entries = tensors.map { tensor -> String in
            defer { offset += tensor.bytes }
            return "\"\(tensor.name)\":" + tensorEntry(tensor.dtype, tensor.shape, offset, offset + tensor.bytes)
        }
        _ = FileManager.default.createFile(atPath: path, contents: Data(craftSafetensors(header: "{" + entries.joined(separator: ",") + "}")))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        handle.seekToEndOfFile()
        data(handle)
        try handle.close()
    }

    // MARK: - Checks

    /// What identifies a file's contents without reading them: size, modification and change times.
    private func fingerprints(_ paths: [String]) -> [String: [Int]] {
        var result: [String: [Int]] = [:]
        for path in paths {
            var isFolder: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
            let names = isFolder.boolValue ? (try? FileManager.default.subpathsOfDirectory(atPath: path)) ?? [] : [""]
            for name in names {
                let file = name.isEmpty ? path : path + "/" + name
                var info = stat()
                guard stat(file, &info) == 0 else { continue }
                result[file] = [Int(info.st_size), info.st_mtim.tv_sec, info.st_mtim.tv_nsec, info.st_ctim.tv_sec, info.st_ctim.tv_nsec]
            }
        }
        return result
    }

    private func temporaries(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.contains(".qconv-tmp-") }.sorted()
    }

    /// Starts the binary, sends `signal` after `delay` seconds, and waits.
    private struct SignalledRun {
        let status: Int32
        let crashed: Bool
        let stderr: String
    }

    private func run(_ arguments: [String], signal: Int32, after delay: Double) throws -> (finished: Bool, result: SignalledRun) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
        process.arguments = arguments + ["--quiet"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        usleep(useconds_t(delay * 1_000_000))
        let finished = !process.isRunning
        if !finished { kill(process.processIdentifier, signal) }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let crashed = process.terminationReason == .uncaughtSignal
        return (finished, SignalledRun(status: process.terminationStatus, crashed: crashed, stderr: stderr))
    }

    /// Kills `command` (writing `destination`) at random points: three times
    /// with SIGKILL, twice with SIGINT; after each, the destination is absent
    /// or complete (`check`), the inputs are unchanged, and after a SIGKILL the
    /// next run writing the destination (`next`) removes the temporaries left.
    private func killAtRandomPoints(_ command: [String], destination: String, inputs: [String], next: [String], seed: UInt64,
                                    check: (String) throws -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = FileSystem.directoryName(of: destination)
        let before = fingerprints(inputs)
        XCTAssertFalse(before.isEmpty, file: file, line: line)
        var rng = SplitMix64(seed: seed)
        var staleRemoved = 0
        for signal in [SIGKILL, SIGINT, SIGKILL, SIGINT, SIGKILL] {
            let delay = Double.random(in: 0.05...1.2, using: &rng)
            let (finished, result) = try run(command + [destination], signal: signal, after: delay)
            let what = "\(command[0]) killed by \(signal) after \(String(format: "%.2f", delay)) s"
            if finished {
                XCTAssertEqual(result.status, 0, "\(what): finished first: \(result.stderr)", file: file, line: line)
            } else {
                XCTAssertTrue(result.crashed && result.status == signal, "\(what): \(result.status) \(result.stderr)", file: file, line: line)
            }
            if FileManager.default.fileExists(atPath: destination) {
                XCTAssertTrue(finished, "\(what): a destination appeared", file: file, line: line)
                try check(destination)
                try FileManager.default.removeItem(atPath: destination)
            }
            XCTAssertEqual(fingerprints(inputs), before, "\(what): an input changed", file: file, line: line)
            if signal == SIGINT {
                XCTAssertEqual(temporaries(in: folder), [], "\(what): SIGINT removes the temporaries", file: file, line: line)
                continue
            }
            // The next run writing the same destination removes what the killed one left, and says so.
            let left = temporaries(in: folder)
            staleRemoved += left.count
            let again = try runQConv(next + [destination])
            XCTAssertEqual(again.status, 0, "\(what): next run: \(again.stderr)", file: file, line: line)
            for name in left {
                XCTAssertTrue(again.stderr.contains("qconv: note: removed \(folder)/\(name), a temporary output left by process "), again.stderr,
                              file: file, line: line)
            }
            XCTAssertEqual(temporaries(in: folder), [], "\(what): stale temporaries remain", file: file, line: line)
            try check(destination)
            try FileManager.default.removeItem(atPath: destination)
        }
        XCTAssertGreaterThan(staleRemoved, 0, "no kill left a temporary behind to clean", file: file, line: line)
    }

    private func verifies(_ path: String) throws {
        let result = try runQConv(["verify", path, "--quiet"])
        XCTAssertEqual(result.status, 0, "\(path) is not a complete container: \(result.stderr)")
    }

    private func inspects(_ path: String) throws {
        let result = try runQConv(["inspect", path, "--stats", "--quiet"])
        XCTAssertEqual(result.status, 0, "\(path) is not a complete model: \(result.stderr)")
    }

    // MARK: - kill -9 and SIGINT

    func testKillingToNF4LeavesNoPartialOutput() throws {
        let inputs = try inputs
        let out = TemporaryDirectory()
        try killAtRandomPoints(["to-nf4", inputs.model], destination: out.file("model.qc"), inputs: [inputs.model],
                               next: ["to-nf4", inputs.sample], seed: 1, check: verifies)
    }

    func testKillingDequantLeavesNoPartialOutput() throws {
        let inputs = try inputs
        let out = TemporaryDirectory()
        try killAtRandomPoints(["dequant", inputs.raw, "--dtype", "f32"], destination: out.file("model"), inputs: [inputs.raw],
                               next: ["dequant", inputs.smallContainer], seed: 2, check: inspects)
    }

    func testKillingMergeLoRALeavesNoPartialOutput() throws {
        let inputs = try inputs
        let out = TemporaryDirectory()
        try killAtRandomPoints(["merge-lora", inputs.model, inputs.adapter], destination: out.file("merged"), inputs: [inputs.model, inputs.adapter],
                               next: ["merge-lora", inputs.smallBase, inputs.smallAdapter], seed: 3, check: inspects)
    }

    // MARK: - An input truncated during a run

    func testAnInputTruncatedDuringARunIsAnErrorAndWritesNothing() throws {
        let inputs = try inputs
        let work = TemporaryDirectory()
        for (command, input, inside) in [(["to-nf4"], inputs.model, "/model.safetensors"), (["dequant"], inputs.raw, ""),
                                         (["merge-lora"], inputs.model, "/model.safetensors")] {
            let copy = work.file("input")
            try? FileManager.default.removeItem(atPath: copy)
            try? FileManager.default.removeItem(atPath: work.file("out"))
            try FileManager.default.copyItem(atPath: input, toPath: copy)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
            process.arguments = command + [copy] + (command == ["merge-lora"] ? [inputs.adapter] : []) + [work.file("out"), "--quiet"]
            let err = Pipe()
            process.standardError = err
            try process.run()
            // Mid-run on any machine: once it has read 16 of the input's 151 MB.
            waitUntil(process, hasRead: 16 << 20)
            XCTAssertEqual(truncate(copy + inside, 1 << 20), 0)
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationReason, .exit, "\(command): \(stderr)")
            XCTAssertTrue([3, 4].contains(process.terminationStatus), "\(command): \(process.terminationStatus) \(stderr)")
            XCTAssertTrue(stderr.hasPrefix("qconv: error: \(copy)"), "\(command): \(stderr)")
            XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
            XCTAssertEqual(work.contents(), ["input"], "\(command): nothing written")
        }
    }

    /// Waits until `process` has read `bytes` bytes (`rchar` in Linux's
    /// /proc/PID/io: reads, preads and sendfile), or has exited.
    private func waitUntil(_ process: Process, hasRead bytes: Int) {
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline {
            if let io = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/io", encoding: .utf8),
               let line = io.split(separator: "\n").first(where: { $0.hasPrefix("rchar:") }),
               let read = Int(line.dropFirst("rchar:".count).trimmingCharacters(in: .whitespaces)), read >= bytes { return }
            usleep(200)
        }
    }

    // MARK: - Two writers of one destination

    /// Starts every run at once and waits for all.
    private func together(_ runs: [[String]]) throws -> [ProcessResult] {
        let results = Locked<[Int: ProcessResult]>([:])
        DispatchQueue.concurrentPerform(iterations: runs.count) { i in
            let result = try? runQConv(runs[i])
            results.withLock { $0[i] = result }
        }
        return try runs.indices.map { i in try XCTUnwrap(results.withLock { $0[i] }, "run \(i) did not start") }
    }

    func testTwoWritersOfOneDestination() throws {
        let inputs = try inputs
        let out = TemporaryDirectory()
        let file = out.file("model.qc"), folder = out.file("model")
        for round in 0..<3 {
            for path in [file, folder] { try? FileManager.default.removeItem(atPath: path) }
            // Without --force, exactly one takes the name; the other says it exists.
            let results = try together([["to-nf4", inputs.sample, file, "--quiet"], ["to-int8", inputs.sample, file, "--quiet"]])
            XCTAssertEqual(results.map(\.status).sorted(), [0, 2], "round \(round): \(results.map(\.stderr))")
            XCTAssertTrue(results.contains { $0.stderr.contains("\(file): output already exists") }, "\(results.map(\.stderr))")
            try verifies(file)
            // With --force, both finish, and the last one's output is there whole.
            let forced = try together([["to-nf4", inputs.sample, file, "--force", "--quiet"], ["to-int8", inputs.sample, file, "--force", "--quiet"]])
            XCTAssertEqual(forced.map(\.status), [0, 0], "round \(round): \(forced.map(\.stderr))")
            try verifies(file)
            // Folders are replaced by moving the old one aside: still whole, nothing left beside.
            let folders = try together([["dequant", inputs.smallContainer, folder, "--force", "--quiet"],
                                        ["dequant", inputs.smallContainer, folder, "--force", "--quiet", "--max-shard-size", "300KB"]])
            XCTAssertEqual(folders.map(\.status), [0, 0], "round \(round): \(folders.map(\.stderr))")
            try inspects(folder)
            XCTAssertEqual(out.contents(), ["model", "model.qc"], "round \(round)")
        }
    }
}
