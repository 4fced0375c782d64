import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Files that are not what they seem, through the binary: named pipes and
/// devices where files are read (refused at once, never waited on), and
/// links where outputs go (an existing entry, even a dangling link, is never
/// replaced without --force).
final class HostileFilesCLITests: XCTestCase {
    private let sample = Fixtures.sample("sharded_llama")
    private let base = Fixtures.sample("lora_llama_basic/base")
    private let adapter = Fixtures.sample("lora_llama_basic/adapter")

    /// Runs the binary (killed after 20 s) and checks for one error line with `status` that contains `text`.
    private func expectError(_ arguments: [String], status: Int32, containing text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let started = Date()
        let result = try runQConv(arguments, timeout: 20)
        let command = arguments.joined(separator: " ")
        XCTAssertFalse(result.timedOut, "\(command) blocked", file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "\(command) took too long", file: file, line: line)
        XCTAssertFalse(result.crashed, "\(command) crashed: \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.status, status, "\(command): \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.hasPrefix("qconv: error: "), result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.contains(text), "\(command): \(result.stderr)", file: file, line: line)
    }

    private func copy(_ source: String, to destination: String) throws {
        try FileManager.default.copyItem(atPath: source, toPath: destination)
    }

    private func makeFIFO(_ path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        XCTAssertEqual(mkfifo(path, 0o644), 0, "mkfifo \(path)")
    }

    private func makeContainer(_ path: String) throws {
        XCTAssertEqual(try runQConv(["to-nf4", sample, path, "--quiet"]).status, 0)
    }

    // MARK: - Finding 5: named pipes and devices as inputs

    func testANamedPipeAsAnInputFileIsRefusedWithoutBlocking() throws {
        let directory = TemporaryDirectory()
        let pipe = directory.file("pipe.safetensors")
        try makeFIFO(pipe)
        let container = directory.file("model.qc")
        try makeContainer(container)
        let refused = "\(pipe): is a named pipe (FIFO), not a regular file"
        for arguments in [["inspect", pipe], ["inspect", pipe, "--stats"], ["to-nf4", pipe, directory.file("o.qc")],
                          ["to-int8", pipe, directory.file("o.qc")], ["dequant", pipe, directory.file("o.safetensors")],
                          ["verify", pipe], ["verify", sample, pipe], ["verify", pipe, container],
                          ["merge-lora", pipe, adapter, directory.file("o.safetensors")],
                          ["merge-lora", pipe, adapter, directory.file("o.safetensors"), "--dry-run"]] {
            try expectError(arguments, status: 3, containing: refused)
        }
        XCTAssertEqual(directory.contents(), ["model.qc", "pipe.safetensors"])
    }

    func testADeviceAsAnInputFileIsRefused() throws {
        let directory = TemporaryDirectory()
        for arguments in [["inspect", "/dev/null"], ["to-nf4", "/dev/zero", directory.file("o.qc")], ["dequant", "/dev/zero", directory.file("o")]] {
            try expectError(arguments, status: 3, containing: "\(arguments[1]): is a character device, not a regular file")
        }
        XCTAssertEqual(directory.contents(), [])
    }

    func testANamedPipeInAModelFolderIsRefusedWithoutBlocking() throws {
        let directory = TemporaryDirectory()
        // A shard of a sharded folder.
        let sharded = directory.file("sharded")
        try copy(sample, to: sharded)
        let shard = sharded + "/model-00002-of-00011.safetensors"
        try makeFIFO(shard)
        for arguments in [["inspect", sharded], ["to-nf4", sharded, directory.file("o.qc")], ["verify", sample, sharded]] {
            try expectError(arguments, status: 3, containing: "\(shard): is a named pipe (FIFO)")
        }
        // The one weights file of a folder, and a side file.
        let folder = directory.file("folder")
        try copy(base, to: folder)
        try makeFIFO(folder + "/config.json")
        try expectError(["to-nf4", folder, directory.file("o.qc")], status: 3, containing: "\(folder)/config.json: is a named pipe (FIFO)")
        try expectError(["merge-lora", folder, adapter, directory.file("o")], status: 3, containing: "\(folder)/config.json: is a named pipe (FIFO)")
        try makeFIFO(folder + "/model.safetensors")
        try expectError(["inspect", folder], status: 3, containing: "\(folder)/model.safetensors: is a named pipe (FIFO)")
        XCTAssertEqual(directory.contents(), ["folder", "sharded"])
    }

    func testANamedPipeInAnAdapterFolderIsRefusedWithoutBlocking() throws {
        let directory = TemporaryDirectory()
        for name in [LoRAAdapter.configFileName, LoRAAdapter.weightsFileName] {
            let copied = directory.file("adapter-\(name)")
            try copy(adapter, to: copied)
            try makeFIFO(copied + "/" + name)
            for extra in [[], ["--dry-run"]] {
                try expectError(["merge-lora", base, copied, directory.file("o")] + extra, status: 3, containing: "\(copied)/\(name): is a named pipe (FIFO)")
            }
        }
        XCTAssertFalse(directory.contents().contains("o"))
    }

    // MARK: - Nothing from a file is executed

    /// A pickle that runs `touch MARKER` when Python's pickle loads it.
    private func hostilePickle(touching marker: String) -> [UInt8] {
        let command = Array("touch \(marker)".utf8)
        let length = UInt32(command.count)
        return [0x80, 0x02] + Array("cposix\nsystem\n".utf8) + [UInt8(ascii: "X")] + (0..<4).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) }
            + command + [0x85, UInt8(ascii: "R"), UInt8(ascii: ".")]
    }

    func testAPickleThatWouldRunACommandIsNeverRun() throws {
        let directory = TemporaryDirectory()
        let marker = directory.file("ran")
        let pickle = hostilePickle(touching: marker)
        writeFile(directory.file("model.bin"), pickle)
        let folder = directory.file("folder"), adapterFolder = directory.file("adapter")
        for path in [folder, adapterFolder] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) }
        writeFile(folder + "/pytorch_model.bin", pickle)
        writeFile(adapterFolder + "/adapter_model.bin", pickle)
        try FileManager.default.copyItem(atPath: adapter + "/adapter_config.json", toPath: adapterFolder + "/adapter_config.json")
        for arguments in [["inspect", directory.file("model.bin"), "--stats"], ["to-nf4", directory.file("model.bin"), directory.file("o.qc")],
                          ["inspect", folder], ["merge-lora", base, adapterFolder, directory.file("o")],
                          ["merge-lora", base, adapterFolder, directory.file("o"), "--dry-run"]] {
            let result = try runQConv(arguments, timeout: 20)
            XCTAssertEqual(result.status, 3, "\(arguments): \(result.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "\(arguments) ran the pickle's command")
        }
    }

    // MARK: - Finding 4: a dangling link at the output path

    func testADanglingLinkAtTheOutputIsNotReplacedWithoutForce() throws {
        let directory = TemporaryDirectory()
        let container = directory.file("model.qc")
        try makeContainer(container)
        let commands: [(name: String, arguments: (String) -> [String])] = [
            ("nf4.qc", { ["to-nf4", self.sample, $0] }),
            ("deq.safetensors", { ["dequant", container, $0] }),
            ("deq-folder", { ["dequant", container, $0] }),
            ("merged", { ["merge-lora", self.base, self.adapter, $0] }),
        ]
        for (name, arguments) in commands {
            let link = directory.file(name), target = directory.file("missing-" + name)
            XCTAssertEqual(symlink(target, link), 0)
            try expectError(arguments(link), status: 2, containing: "\(link): output already exists; pass --force to replace it")
            XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), target, "the link is left as it was")
            XCTAssertFalse(FileManager.default.fileExists(atPath: target))

            let result = try runQConv(arguments(link) + ["--force", "--quiet"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link), "--force replaces the link itself")
            XCTAssertTrue(FileManager.default.fileExists(atPath: link))
            XCTAssertFalse(FileManager.default.fileExists(atPath: target), "nothing is written where the link pointed")
        }
        XCTAssertEqual(directory.contents().filter { $0.contains("qconv-tmp") }, [])
    }
}
