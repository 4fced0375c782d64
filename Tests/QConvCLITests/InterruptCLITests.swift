import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// SIGINT at every moment of short runs, from start-up to exit: around the
/// creation of the temporary file or folder, while files are created inside
/// it, around the rename. Whenever the signal comes, nothing is left beside
/// the destination, the destination is absent or whole, and the process dies
/// of the signal (or finished first), never exits with an error about the
/// temporary output the interrupt removed under it. (Long runs killed at
/// random points are in FaultInjectionCLITests.)
final class InterruptCLITests: XCTestCase {
    private func interruptAtEveryMoment(_ command: [String], destination: String, seed: UInt64, check: (String) throws -> Void,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = FileSystem.directoryName(of: destination)
        var rng = SplitMix64(seed: seed)
        var interrupted = 0
        for run in 0..<20 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
            process.arguments = command + [destination, "--quiet"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // A debug run of these takes 30 to 60 ms; its temporary output appears after about 15 ms.
            usleep(useconds_t(Int.random(in: 0...60_000, using: &rng)))
            kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
            let what = "\(command[0]) run \(run)"
            if process.terminationReason == .uncaughtSignal {
                XCTAssertEqual(process.terminationStatus, SIGINT, what, file: file, line: line)
                interrupted += 1
            } else {
                XCTAssertEqual(process.terminationStatus, 0, what, file: file, line: line)
            }
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.contains(".qconv-tmp-") }
            XCTAssertEqual(left, [], "\(what): a temporary output was left behind", file: file, line: line)
            if FileManager.default.fileExists(atPath: destination) {
                try check(destination)
                try FileManager.default.removeItem(atPath: destination)
            }
        }
        XCTAssertGreaterThan(interrupted, 0, "no run was interrupted", file: file, line: line)
    }

    func testSIGINTAtAnyMomentOfAFileOutputLeavesNothingBehind() throws {
        let out = TemporaryDirectory()
        try interruptAtEveryMoment(["to-nf4", Fixtures.sample("sharded_llama")], destination: out.file("model.qc"), seed: 5) { path in
            let result = try runQConv(["verify", path, "--quiet"])
            XCTAssertEqual(result.status, 0, "\(path) is not a whole container: \(result.stderr)")
        }
    }

    func testSIGINTAtAnyMomentOfAFolderOutputLeavesNothingBehind() throws {
        let out = TemporaryDirectory()
        let container = out.file("input.qc")
        XCTAssertEqual(try runQConv(["to-nf4", Fixtures.sample("sharded_llama"), container, "--quiet"]).status, 0)
        try interruptAtEveryMoment(["dequant", container, "--max-shard-size", "300KB"], destination: out.file("model"), seed: 6) { path in
            let result = try runQConv(["inspect", path, "--stats", "--quiet"])
            XCTAssertEqual(result.status, 0, "\(path) is not a whole model: \(result.stderr)")
        }
    }
}
