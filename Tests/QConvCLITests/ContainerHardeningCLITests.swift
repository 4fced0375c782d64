import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Hostile containers and a full disk, run through the binary: exit 3 (or 4)
/// with one error line, never a crash, nothing written where it must not be.
final class ContainerHardeningCLITests: XCTestCase {
    private let sample = Fixtures.sample("sharded_llama")

    private func editor(_ path: String) -> ContainerEditor { ContainerEditor(path: path, hash: XXHash64.hash) }

    /// Runs the binary and checks the outcome is a one-line error with `status`.
    @discardableResult
    private func expectError(_ arguments: [String], status: Int32, containing text: String, currentDirectory: String? = nil,
                             file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runQConv(arguments, currentDirectory: currentDirectory)
        let command = arguments.joined(separator: " ")
        XCTAssertFalse(result.crashed, "\(command) crashed: \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.status, status, "\(command): \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.hasPrefix("qconv: error: "), result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.contains(text), "\(command): \(result.stderr)", file: file, line: line)
        return result
    }

    private func convert(_ command: String, to path: String, _ options: [String] = []) throws {
        let result = try runQConv([command, sample, path, "--quiet"] + options)
        XCTAssertEqual(result.status, 0, result.stderr)
    }

    func testEmbeddedFileNamePointingOutsideTheOutputIsRefused() throws {
        let directory = TemporaryDirectory()
        let work = directory.file("work")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: false)
        let path = work + "/model.qc"
        try convert("to-nf4", to: path)
        try editor(path).rewriteHeader { header in
            var files = header["files"] as! [[String: Any]]
            files[0]["name"] = "../evil"
            header["files"] = files
        }
        for arguments in [["dequant", "model.qc", "out"], ["dequant", "model.qc", "out", "--max-shard-size", "100KB"],
                          ["verify", "model.qc"], ["inspect", "model.qc"]] {
            try expectError(arguments, status: 3, containing: "embedded file \"../evil\": unsafe name", currentDirectory: work)
        }
        XCTAssertEqual(directory.contents(), ["work"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: work), ["model.qc"])
    }

    /// A zero gap larger than `verify`'s 4 MiB buffer used to be read into it.
    func testVerifyRefusesAGapLargerThanItsBufferWithoutCrashing() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.qc")
        try convert("to-nf4", to: path)
        let tensor = try ContainerFile(path: path).tensors[2]
        try editor(path).insertGap(beforeTensor: tensor.name, count: (4 << 20) + 64)
        for arguments in [["verify", path], ["dequant", path, directory.file("out.safetensors")]] {
            try expectError(arguments, status: 3, containing: "tensor '\(tensor.name)': part 'codes' starts")
        }
        XCTAssertEqual(directory.contents(), ["model.qc"])
    }

    /// `verify` passes only what `dequant` can decode.
    func testVerifyRefusesAnOutlierColumnOutOfRange() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.qc")
        try convert("to-int8", to: path, ["--outlier-threshold", "0.06"])
        let tensor = try XCTUnwrap(try ContainerFile(path: path).tensors.first { tensor in
            if case let .int8(p) = tensor.scheme { return p.outlierColumnCount > 0 }
            return false
        })
        XCTAssertEqual(try runQConv(["verify", path]).status, 0)
        try editor(path).changePart(tensor: tensor.name, part: "outlier_columns") { bytes in
            bytes.replaceSubrange(0..<4, with: [0xA0, 0x86, 0x01, 0x00])  // 100000
        }
        for arguments in [["verify", path], ["dequant", path, directory.file("out.safetensors")]] {
            try expectError(arguments, status: 3, containing: "tensor '\(tensor.name)': part 'outlier_columns' entry 0 is 100000")
        }
        XCTAssertEqual(directory.contents(), ["model.qc"])
    }

    /// Under `ulimit -f`, writing past the limit is an I/O error (exit 4) that
    /// removes the temporary output, not death by SIGXFSZ leaving it behind.
    func testFileSizeLimitIsAnIOErrorAndLeavesNothing() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.qc")
        try convert("to-nf4", to: path)
        // The limit (in 512-byte blocks for sh) is below the 1.5 MB the dequantized sample needs.
        for arguments in [["dequant", "model.qc", "out.safetensors"], ["to-nf4", sample, "again.qc"]] {
            let result = try runLimited(arguments, fileSizeBlocks: 200, in: directory.path)
            let command = arguments.joined(separator: " ")
            XCTAssertEqual(result.status, 4, "\(command): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(arguments[2]): cannot "), result.stderr)
            XCTAssertTrue(result.stderr.contains("File too large"), result.stderr)
            XCTAssertFalse(result.stderr.contains("qconv-tmp"), result.stderr)
            XCTAssertEqual(directory.contents(), ["model.qc"], command)
        }
    }

    /// Runs the binary with SIGXFSZ at its default action and a file size limit, through `env` and `sh`.
    private func runLimited(_ arguments: [String], fileSizeBlocks: Int, in directory: String) throws -> (status: Int32, stderr: String) {
        let env = "/usr/bin/env"
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: env)
        probe.arguments = ["--default-signal=XFSZ", "true"]
        try probe.run()
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else { throw XCTSkip("this env(1) cannot reset signal actions") }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: env)
        process.arguments = ["--default-signal=XFSZ", "/bin/sh", "-c", "ulimit -f \(fileSizeBlocks) && exec \"$@\"", "sh", qconvExecutablePath] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // A shell reports a child killed by signal N as 128 + N (SIGXFSZ: 153).
        return (process.terminationStatus, stderr)
    }
}
