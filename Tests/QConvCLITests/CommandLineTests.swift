import Foundation
import QConvCommandLine
import QConvKit
import QConvTestSupport
import XCTest

/// The command-line layer: typed options parsed once, every command's
/// options declared, usage errors, and what happens on Ctrl-C.
final class CommandLineTests: XCTestCase {
    static let count = Option<Int>("--count", "N", "How many.", in: 1...10)
    static let ratio = Option<Double>("--ratio", "X", "A ratio.", expected: "a number >= 0", allowing: { $0 >= 0 })
    static let name = Option<String>("--name", "S", "Names.", repeatable: true)
    static let loud = Flag("--loud", "Loudly.")
    static let spec = CommandSpec(name: "demo", abstract: "A demo.", positionals: [("IN", "Input.")],
                                  options: [count.spec, ratio.spec, name.spec, loud.spec])

    func testOptionsAreReadTypedFromTheirDeclarations() throws {
        let parsed = try ParsedArguments.parse(["in", "--count", "3", "--ratio=0.5", "--name", "a", "--name", "b", "--loud"], spec: Self.spec)
        XCTAssertEqual(parsed.positionals, ["in"])
        XCTAssertEqual(try parsed.value(Self.count), 3)
        XCTAssertEqual(try parsed.value(Self.ratio), 0.5)
        XCTAssertEqual(try parsed.values(Self.name), ["a", "b"])
        XCTAssertTrue(parsed[Self.loud])
        let empty = try ParsedArguments.parse(["in"], spec: Self.spec)
        XCTAssertNil(try empty.value(Self.count))
        XCTAssertFalse(empty[Self.loud])
    }

    func testBadValuesAreUsageErrorsNamingTheOptionAndWhatItExpects() throws {
        let cases: [([String], String)] = [
            (["in", "--count", "11"], "--count expects an integer in 1...10, got '11'"),
            (["in", "--count", "x"], "--count expects an integer in 1...10, got 'x'"),
            (["in", "--ratio", "-1"], "--ratio expects a number >= 0, got '-1'"),
            (["in", "--ratio", "nan"], "--ratio expects a number >= 0, got 'nan'"),
        ]
        for (arguments, message) in cases {
            let parsed = try ParsedArguments.parse(arguments, spec: Self.spec)
            XCTAssertThrowsError(try parsed.value(Self.count).map { _ in () } ?? parsed.value(Self.ratio).map { _ in () }) { error in
                XCTAssertEqual((error as? UsageError)?.message, message + "\nsee 'qconv demo --help'")
            }
        }
        XCTAssertThrowsError(try ParsedArguments.parse(["in", "--cuont", "3"], spec: Self.spec)) { error in
            XCTAssertEqual((error as? UsageError)?.message, "unknown option '--cuont' for 'qconv demo' (did you mean --count?)\nsee 'qconv demo --help'")
        }
    }

    /// Every command reads its options once, before any work, through the
    /// options it declares: reading an undeclared one would stop the
    /// program (a crash here), whatever the arguments.
    func testEveryCommandParsesWithoutReadingAnUndeclaredOption() throws {
        let directory = TemporaryDirectory()
        let help = try runQConv(["--help"])
        let names = help.stdout.split(separator: "\n", omittingEmptySubsequences: false).drop { $0 != "commands:" }.dropFirst()
            .prefix { !$0.isEmpty }.map { String($0.split(separator: " ")[0]) }
        XCTAssertEqual(names, ["inspect", "to-nf4", "to-fp4", "to-int8", "dequant", "to-safetensors", "verify", "merge-lora"])
        for name in names {
            let commandHelp = try runQConv([name, "--help"])
            XCTAssertEqual(commandHelp.status, 0)
            // "usage: qconv NAME IN OUT [options]": as many missing paths as it takes positionals.
            let usage = try XCTUnwrap(commandHelp.stdout.split(separator: "\n").first { $0.hasPrefix("usage: qconv \(name) ") })
            let positionals = usage.split(separator: " ").dropFirst(3).filter { $0 != "[options]" && !$0.hasSuffix("...]") }.count
            let result = try runQConv([name] + (0..<positionals).map { directory.file("missing-\($0)") })
            XCTAssertFalse(result.crashed, "\(name) crashed: \(result.stderr)")
            XCTAssertEqual(result.status, 4, "\(name) must get past parsing to the missing input: \(result.stderr)")
        }
    }

    func testBenchmarkHarnessRefusesABadNumber() throws {
        let bench = FileManager.default.fileExists(atPath: qconvExecutablePath + "-bench") ? qconvExecutablePath + "-bench" : ""
        guard !bench.isEmpty else { throw XCTSkip("qconv-bench is not built beside qconv") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bench)
        process.arguments = ["--runs", "many"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 2, text)
        XCTAssertTrue(text.contains("--runs expects an integer in 1...1000, got 'many'"), text)
    }

    /// Ctrl-C in the middle of a conversion: the process dies of SIGINT, and
    /// neither the destination nor a temporary file is left behind.
    func testInterruptedConversionLeavesNothingBehind() throws {
        let directory = TemporaryDirectory()
        let input = directory.file("big.safetensors")
        // 64 MB of F32 in 16 tensors: long enough to be interrupted in a debug build.
        let rows = 1024, columns = 1024
        var header = "{"
        for t in 0..<16 {
            header += "\"w\(t)\":{\"dtype\":\"F32\",\"shape\":[\(rows),\(columns)],\"data_offsets\":[\(t * rows * columns * 4),\((t + 1) * rows * columns * 4)]}"
            header += t < 15 ? "," : "}"
        }
        var data = [UInt8](repeating: 0, count: 16 * rows * columns * 4)
        for i in stride(from: 0, to: data.count, by: 4) { data[i + 3] = 0x3C; data[i + 1] = UInt8(truncatingIfNeeded: i) }
        writeFile(input, craftSafetensors(header: header, data: data))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
        process.arguments = ["to-nf4", input, directory.file("out.qc"), "--quiet", "--threads", "1"]
        let err = Pipe()
        process.standardError = err
        try process.run()
        // Wait for the temporary output to appear, then interrupt.
        let deadline = Date().addingTimeInterval(20)
        while !directory.contents().contains(where: { $0.contains("qconv-tmp") }) && process.isRunning && Date() < deadline { usleep(1000) }
        XCTAssertTrue(process.isRunning, "the conversion finished before it could be interrupted")
        kill(process.processIdentifier, SIGINT)
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal)
        XCTAssertEqual(process.terminationStatus, SIGINT)
        XCTAssertEqual(directory.contents(), ["big.safetensors"])
        XCTAssertEqual(message, "qconv: interrupted, nothing written\n")
    }

    func testHelpForACommandAndDidYouMean() throws {
        let help = try runQConv(["help", "dequant"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.hasPrefix("Turn a qconv container or a bitsandbytes checkpoint back into safetensors."), help.stdout)
        XCTAssertTrue(help.stdout.contains("examples:\n  qconv dequant "), help.stdout)
        let cases: [([String], String)] = [
            (["help", "nosuch"], "qconv: error: unknown command 'nosuch'\n  see 'qconv --help'\n"),
            (["help", "to-nf44"], "qconv: error: unknown command 'to-nf44' (did you mean to-nf4?)\n  see 'qconv --help'\n"),
            (["inspct", "x"], "qconv: error: unknown command 'inspct' (did you mean inspect?)\n  see 'qconv --help'\n"),
            (["to-nf4", "a", "b", "--block-sz", "32"],
             "qconv: error: unknown option '--block-sz' for 'qconv to-nf4' (did you mean --block-size?)\n  see 'qconv to-nf4 --help'\n"),
        ]
        for (arguments, expected) in cases {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 2, "\(arguments)")
            XCTAssertEqual(result.stderr, expected, "\(arguments)")
        }
        // Every command's help ends with real examples.
        let overview = try runQConv(["--help"]).stdout
        let names = overview.split(separator: "\n", omittingEmptySubsequences: false).drop { $0 != "commands:" }.dropFirst()
            .prefix { !$0.isEmpty }.map { String($0.split(separator: " ")[0]) }
        XCTAssertEqual(names.count, 8)
        for name in names {
            let text = try runQConv(["help", name]).stdout
            let examples = text.components(separatedBy: "examples:\n").last?.split(separator: "\n") ?? []
            XCTAssertGreaterThanOrEqual(examples.count, 2, name)
            XCTAssertTrue(examples.allSatisfy { $0.hasPrefix("  qconv \(name) ") }, "\(name): \(examples)")
        }
    }

    func testProgressTextFitsItsWidthLosingTheMiddleOfTheName() {
        let name = "model.layers.0.self_attn.k_proj.weight"
        XCTAssertEqual(TerminalText.fitted("to-nf4 42%", name, width: 80), "to-nf4 42% " + name)
        let narrow = TerminalText.fitted("to-nf4 42%", name, width: 40)
        XCTAssertEqual(narrow.count, 39)
        XCTAssertEqual(narrow, "to-nf4 42% model.layers...._proj.weight")
        XCTAssertEqual(TerminalText.fitted("to-nf4 42%", name, width: 12), "to-nf4 42%")
        XCTAssertEqual(TerminalText.fitted("to-nf4 42%", name, width: 5), "to-n")
        XCTAssertEqual(TerminalText.fitted("verify 100%", "", width: 40), "verify 100%")
    }

    func testSuggestionsPickTheNearestNames() {
        XCTAssertEqual(Suggestions.closest(to: "--block-sz", among: ["--block-size", "--no-double-quant", "--json"]), ["--block-size"])
        XCTAssertEqual(Suggestions.closest(to: "--jsno", among: ["--json", "--quiet"]), ["--json"])
        XCTAssertEqual(Suggestions.closest(to: "--xyz", among: ["--json", "--quiet"]), [])
        XCTAssertEqual(Suggestions.closest(to: "merge", among: ["merge-lora", "verify"]), ["merge-lora"])
    }
}
