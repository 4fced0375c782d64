import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Inputs of a few megabytes built to cost as much as possible per byte
/// (tens of thousands of tensors, huge metadata, one long row, a 9 MB name,
/// tens of thousands of adapter modules): every command that reads them
/// stays under 200 MB and ends in seconds. The times asserted are those of
/// the debug build the tests run; docs/RELIABILITY.md has release figures
/// for the same inputs at 10 MB.
final class ResourceBoundsCLITests: XCTestCase {
    private func write(_ path: String, header entries: [String], data: [UInt8] = []) {
        writeFile(path, craftSafetensors(header: "{" + entries.joined(separator: ",") + "}", data: data))
    }

    private func assertBounded(_ arguments: [String], status: Int32 = 0, seconds: Double = 15, file: StaticString = #filePath, line: UInt = #line) throws {
        let run = try runQConvMeasured(arguments + ["--quiet"])
        let command = arguments.map { $0.count > 60 ? FileSystem.baseName(of: $0) : $0 }.joined(separator: " ")
        XCTAssertNil(run.signal, "\(command) died of signal \(run.signal ?? 0)", file: file, line: line)
        XCTAssertEqual(run.status, status, "\(command): \(run.stderr.prefix(300))", file: file, line: line)
        XCTAssertLessThan(run.seconds, seconds, command, file: file, line: line)
        XCTAssertLessThan(run.peakBytes, 200 << 20, "\(command): peak \(run.peakBytes >> 20) MB", file: file, line: line)
    }

    func testManyTensorsAndLargeHeaders() throws {
        let directory = TemporaryDirectory()
        // 25,000 zero-size tensors: a 1.4 MB header.
        let many = directory.file("many.safetensors")
        write(many, header: (0..<25_000).map { "\"t\($0)\":" + tensorEntry("F32", [0], 0, 0) })
        try assertBounded(["inspect", many, "--stats"])
        try assertBounded(["to-nf4", many, directory.file("many.qc")])
        try assertBounded(["dequant", directory.file("many.qc"), directory.file("many-out"), "--max-shard-size", "1MB"])
        // 150,000 metadata entries: 4.8 MB.
        let metadata = directory.file("metadata.safetensors")
        write(metadata, header: ["\"__metadata__\":{" + (0..<150_000).map { "\"k\($0)\":\"vvvvvvvvvvvvvvvvvvvv\"" }.joined(separator: ",") + "}"])
        try assertBounded(["inspect", metadata])
        try assertBounded(["to-int8", metadata, directory.file("metadata.qc")])
        // One tensor named with 9 million characters.
        let named = directory.file("named.safetensors")
        write(named, header: ["\"" + String(repeating: "a", count: 9_000_000) + "\":" + tensorEntry("F32", [1], 0, 4)], data: [0, 0, 128, 63])
        try assertBounded(["inspect", named, "--stats"])
    }

    func testOneLongRow() throws {
        let directory = TemporaryDirectory()
        // [1, 2.3M] float32 (9.2 MB): int8 keeps one scale and outlier columns per row.
        let count = 2_300_000
        let row = directory.file("row.safetensors")
        write(row, header: ["\"w\":" + tensorEntry("F32", [1, count], 0, 4 * count)],
              data: (0..<count).flatMap { i in withUnsafeBytes(of: Float(i % 7 == 0 ? 9 : 0.5).bitPattern.littleEndian) { Array($0) } })
        try assertBounded(["to-int8", row, directory.file("row8.qc"), "--outlier-threshold", "6"])
        try assertBounded(["to-nf4", row, directory.file("row4.qc")])
        try assertBounded(["verify", row, directory.file("row8.qc")])
    }

    /// 20,000 modules that fit nothing: the merge is refused with every problem listed, in bounded time and memory.
    func testManyAdapterModules() throws {
        let directory = TemporaryDirectory()
        let adapter = directory.file("adapter")
        try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: false)
        write(adapter + "/adapter_model.safetensors", header: (0..<20_000).flatMap { i in
            ["\"base_model.model.model.layers.\(i).self_attn.q_proj.lora_A.weight\":" + tensorEntry("F32", [1, 0], 0, 0),
             "\"base_model.model.model.layers.\(i).self_attn.q_proj.lora_B.weight\":" + tensorEntry("F32", [0, 1], 0, 0)]
        })
        writeFile(adapter + "/adapter_config.json", Array(#"{"peft_type": "LORA", "r": 1, "lora_alpha": 1}"#.utf8))
        try assertBounded(["merge-lora", Fixtures.sample("lora_llama_basic/base"), adapter, directory.file("out"), "--dry-run"], status: 3)
    }
}
