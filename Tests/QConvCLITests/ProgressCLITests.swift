import Foundation
import QConvTestSupport
import XCTest

/// The progress line: drawn on a terminal, never in pipes, never with --quiet or --json.
final class ProgressCLITests: XCTestCase {
    /// Runs `qconv ARGUMENTS` with stdout and stderr on a pseudo-terminal (util-linux
    /// `script`), returning everything the terminal received; nil where `script` is missing.
    func runOnTerminal(_ arguments: [String], columns: Int? = nil) throws -> (status: Int32, output: String)? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return nil }
        let quoted = ([qconvExecutablePath] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let resize = columns.map { "stty cols \($0) rows 24; " } ?? ""
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-qefc", resize + quoted.joined(separator: " "), "/dev/null"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testLongCommandsDrawProgressOnATerminal() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        let runs: [(label: String, arguments: [String])] = [
            ("to-nf4", ["to-nf4", sample, directory.file("a.qc")]),
            ("to-int8", ["to-int8", sample, directory.file("b.qc")]),
            ("dequant", ["dequant", directory.file("a.qc"), directory.file("a.safetensors")]),
            ("inspect", ["inspect", "--stats", sample]),
            ("verify", ["verify", sample, directory.file("a.qc")]),
        ]
        for run in runs {
            guard let result = try runOnTerminal(run.arguments) else { throw XCTSkip("no /usr/bin/script for a pseudo-terminal") }
            XCTAssertEqual(result.status, 0, "\(run.arguments): \(result.output)")
            XCTAssertTrue(result.output.contains("\r\(run.label) "), "\(run.label): no progress line in \(result.output.debugDescription)")
            // The line is cleared before the report, so the report starts clean.
            XCTAssertTrue(result.output.contains("\r\u{1B}[K"), "\(run.label): progress line not cleared")
        }
    }

    func testQuietAndJSONDrawNothingOnATerminal() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        for extra in [["--quiet"], ["--json"]] {
            guard let result = try runOnTerminal(["to-nf4", sample, directory.file("q.qc"), "--force"] + extra) else {
                throw XCTSkip("no /usr/bin/script for a pseudo-terminal")
            }
            XCTAssertEqual(result.status, 0, result.output)
            // The terminal turns "\n" into "\r\n"; a progress line is "\rto-nf4 ...".
            XCTAssertFalse(result.output.contains("\rto-nf4"), "\(extra): progress drawn: \(result.output.debugDescription)")
            XCTAssertFalse(result.output.contains("\u{1B}[K"), "\(extra): progress cleared: \(result.output.debugDescription)")
        }
    }

    /// In a pipe (CI logs) the commands print their report on stdout and nothing on stderr.
    func testNothingOnStderrWhenItIsNotATerminal() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        let runs = [
            ["to-nf4", sample, directory.file("a.qc")],
            ["to-int8", sample, directory.file("b.qc"), "--verify"],
            ["dequant", directory.file("a.qc"), directory.file("out")],
            ["verify", sample, directory.file("a.qc")],
            ["verify", directory.file("a.qc")],
            ["inspect", "--stats", directory.file("b.qc")],
        ]
        for arguments in runs {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 0, "\(arguments): \(result.stderr)")
            XCTAssertEqual(result.stderr, "", "\(arguments)")
            XCTAssertFalse(result.stdout.isEmpty, "\(arguments)")
        }
    }

    /// On terminals of 40 and 80 columns every drawn line fits (the last
    /// column stays free; `TerminalText.fitted` cuts the middle of long names).
    func testTheLineFitsTheTerminalWidth() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        for columns in [40, 80] {
            guard let result = try runOnTerminal(["to-nf4", sample, directory.file("w\(columns).qc")], columns: columns) else {
                throw XCTSkip("no /usr/bin/script for a pseudo-terminal")
            }
            XCTAssertEqual(result.status, 0, result.output)
            // Each redraw starts with "\r" and ends with the erase-to-end-of-line sequence.
            let drawn = result.output.components(separatedBy: "\r").compactMap { piece -> String? in
                guard let end = piece.range(of: "\u{1B}[K") else { return nil }
                return String(piece[..<end.lowerBound])
            }.filter { $0.hasPrefix("to-nf4 ") }
            XCTAssertFalse(drawn.isEmpty, result.output.debugDescription)
            for line in drawn { XCTAssertLessThan(line.count, columns, line) }
        }
    }
}
