import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// docs/FORMAT.md's "readers must refuse" list, one crafted container per
/// rule, run through every command that reads a container (finding 3: one
/// reader, one set of rules). Rules about the header and the layout are
/// checked on open, so every command refuses them; rules about the data
/// (checksums, padding, outlier columns) are checked whenever the region is
/// read, so every command that reads it refuses them, and the commands that
/// read only the header (`inspect`, `merge-lora --dry-run`) do not see them.
final class ContainerRulesCLITests: XCTestCase {
    private let base = Fixtures.sample("lora_llama_basic/base")
    private let adapter = Fixtures.sample("lora_llama_basic/adapter")
    /// An int8 tensor with outlier columns in the sample's container.
    private let tensor = "model.layers.0.mlp.down_proj.weight"

    private struct Rule {
        let name: String
        /// Something every refusal says (beyond the file's path).
        let says: String
        /// Checked when the data is read rather than on open.
        let data: Bool
        let craft: (_ path: String, _ editor: ContainerEditor) throws -> Void
    }

    private func header(_ change: @escaping (inout [String: Any]) -> Void) -> (String, ContainerEditor) throws -> Void {
        { _, editor in try editor.rewriteHeader(change) }
    }

    private func tensorEntry(_ change: @escaping (inout [String: Any]) -> Void) -> (String, ContainerEditor) throws -> Void {
        header { header in
            var tensors = header["tensors"] as! [[String: Any]]
            let index = tensors.firstIndex { $0["name"] as? String == self.tensor }!
            change(&tensors[index])
            header["tensors"] = tensors
        }
    }

    private func bytes(_ change: @escaping (inout Data) -> Void) -> (String, ContainerEditor) throws -> Void {
        { path, _ in
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            change(&data)
            try data.write(to: URL(fileURLWithPath: path))
        }
    }

    private static func setLength(_ value: UInt64) -> (inout Data) -> Void {
        { data in data.replaceSubrange(16..<24, with: (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }) }
    }

    private var rules: [Rule] {
        [
            Rule(name: "wrong magic", says: "", data: false, craft: bytes { $0[0] = UInt8(ascii: "X") }),
            Rule(name: "another version", says: "container format version 2 is not supported", data: false, craft: bytes { $0[8] = 2 }),
            Rule(name: "non-zero flags", says: "container flags 1 are not supported", data: false, craft: bytes { $0[12] = 1 }),
            Rule(name: "H over the limit", says: "exceeds the 100000000-byte limit", data: false, craft: bytes(Self.setLength(100_000_001))),
            Rule(name: "header past the end", says: "runs past the end of the", data: false, craft: bytes(Self.setLength(99_000_000))),
            Rule(name: "header checksum", says: "container header checksum mismatch", data: false, craft: bytes { $0[40] ^= 1 }),
            Rule(name: "header not UTF-8", says: "container header is not valid UTF-8", data: false, craft: { path, _ in
                var data = try Data(contentsOf: URL(fileURLWithPath: path))
                let length = Int(data[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
                let at = try XCTUnwrap(data[32..<(32 + length)].firstIndex(of: UInt8(ascii: "q")))  // in "qconv-container"
                data[at] = 0xFF
                let checksum = XXHash64.hash([UInt8](data[32..<(32 + length)]))
                data.replaceSubrange(24..<32, with: (0..<8).map { UInt8(truncatingIfNeeded: checksum >> (8 * $0)) })
                try data.write(to: URL(fileURLWithPath: path))
            }),
            Rule(name: "header not JSON", says: "container header is not valid JSON", data: false, craft: header { $0 = ["__raw__": "{\"format\":"] }),
            Rule(name: "header of another shape", says: "field 'tensors' must be", data: false, craft: header { $0["tensors"] = 3 }),
            Rule(name: "unknown scheme", says: "unknown scheme 'int9'", data: false, craft: tensorEntry { $0["scheme"] = "int9" }),
            Rule(name: "unknown dtype", says: "unknown dtype 'F17'", data: false, craft: tensorEntry { $0["dtype"] = "F17" }),
            Rule(name: "parts not of the scheme", says: "do not match the scheme's", data: false, craft: tensorEntry { t in
                var parts = t["parts"] as! [[String: Any]]; parts.removeLast(); t["parts"] = parts
            }),
            Rule(name: "length not dtype x shape", says: "part 'codes' is 10751 bytes but its dtype and shape need 10752", data: false, craft: tensorEntry { t in
                var parts = t["parts"] as! [[String: Any]]; parts[0]["length"] = (parts[0]["length"] as! Int) - 1; t["parts"] = parts
            }),
            Rule(name: "misaligned region", says: "not a multiple of 64", data: false, craft: tensorEntry { t in
                var parts = t["parts"] as! [[String: Any]]; parts[1]["offset"] = (parts[1]["offset"] as! Int) + 1; t["parts"] = parts
            }),
            Rule(name: "overlapping regions", says: "part 'codes' overlaps or precedes", data: false, craft: tensorEntry { t in
                var parts = t["parts"] as! [[String: Any]]; parts[0]["offset"] = 0; t["parts"] = parts
            }),
            Rule(name: "regions out of order", says: "tensor 'model.norm.weight': part 'data' ", data: false, craft: header { h in
                var tensors = h["tensors"] as! [[String: Any]]; tensors.insert(tensors.removeLast(), at: 0); h["tensors"] = tensors
            }),
            Rule(name: "gap of 64 bytes", says: "bytes after the previous region ends", data: false, craft: { _, editor in
                try editor.insertGap(beforeTensor: self.tensor, count: 64)
            }),
            Rule(name: "region past the end", says: "(truncated?)", data: false, craft: bytes { $0.removeLast(100) }),
            Rule(name: "bytes after the last region", says: "3 trailing bytes after the last part", data: false, craft: bytes { $0.append(contentsOf: [0, 0, 0]) }),
            Rule(name: "header version", says: "container header field 'version' is 2", data: false, craft: header { $0["version"] = 2 }),
            Rule(name: "parameter of another type", says: "field 'params.outlier_column_count' must be", data: false, craft: tensorEntry { t in
                var params = t["params"] as! [String: Any]; params["outlier_column_count"] = "32"; t["params"] = params
            }),
            Rule(name: "unsafe embedded file name", says: "embedded file \"../evil\": unsafe name", data: false, craft: header { h in
                var files = h["files"] as! [[String: Any]]; files[0]["name"] = "../evil"; h["files"] = files
            }),
            Rule(name: "non-zero padding", says: "is not zero: the file is damaged", data: true, craft: { path, editor in
                // The padding in front of the tensor's outlier_columns part (its row_scales end 64-aligned; codes are followed by none).
                let container = try ContainerFile(path: path)
                let parts = try XCTUnwrap(container.tensor(named: "model.layers.0.mlp.gate_proj.weight")).parts
                let end = parts[2].offset + parts[2].length
                XCTAssertLessThan(end, parts[3].offset, "the crafted padding exists")
                var data = try Data(contentsOf: URL(fileURLWithPath: path))
                data[Int(container.dataStart + end)] = 7
                try data.write(to: URL(fileURLWithPath: path))
            }),
            Rule(name: "outlier column out of range", says: "part 'outlier_columns' entry 0 is 100000", data: true, craft: { _, editor in
                try editor.changePart(tensor: self.tensor, part: "outlier_columns") { $0.replaceSubrange(0..<4, with: [0xA0, 0x86, 0x01, 0x00]) }
            }),
            Rule(name: "outlier columns not increasing", says: "part 'outlier_columns' entry 1 is 0", data: true, craft: { _, editor in
                try editor.changePart(tensor: self.tensor, part: "outlier_columns") { $0.replaceSubrange(4..<8, with: [0, 0, 0, 0]) }
            }),
            Rule(name: "part checksum", says: "part 'codes' checksum mismatch", data: true, craft: { path, _ in
                let container = try ContainerFile(path: path)
                let codes = try XCTUnwrap(container.tensor(named: self.tensor)).parts[0]
                var data = try Data(contentsOf: URL(fileURLWithPath: path))
                data[Int(container.dataStart + codes.offset) + 5] ^= 0x10
                try data.write(to: URL(fileURLWithPath: path))
            }),
        ]
    }

    /// The commands that read a container `c`, and whether they read its data.
    private func commands(_ c: String, _ out: String) -> [(arguments: [String], readsData: Bool)] {
        [
            (["inspect", c], false),
            (["inspect", c, "--stats"], true),
            (["dequant", c, out + ".safetensors"], true),
            (["dequant", c, out + "-folder"], true),
            (["verify", c], true),
            (["verify", base, c], true),
            (["merge-lora", c, adapter, out + ".qc"], true),
            (["merge-lora", c, adapter, out + "-merged", "--dequantize"], true),
            (["merge-lora", c, adapter, out + "-dry.qc", "--dry-run"], false),
        ]
    }

    func testEveryRuleIsCheckedByEveryCommandThatReadsWhatItIsAbout() throws {
        let directory = TemporaryDirectory()
        let original = directory.file("original.qc")
        XCTAssertEqual(try runQConv(["to-int8", base, original, "--outlier-threshold", "0.06", "--quiet"]).status, 0)
        for command in commands(original, directory.file("check")) {
            let result = try runQConv(command.arguments + ["--quiet"])
            XCTAssertEqual(result.status, 0, "the intact container passes \(command.arguments): \(result.stderr)")
        }
        for name in directory.contents() where name != "original.qc" { try FileManager.default.removeItem(atPath: directory.file(name)) }

        for (number, rule) in rules.enumerated() {
            let path = directory.file("rule\(number).qc")
            try FileManager.default.copyItem(atPath: original, toPath: path)
            try rule.craft(path, ContainerEditor(path: path, hash: XXHash64.hash))
            let runs = commands(path, directory.file("out\(number)"))
            // Two at a time (the machine's cores), results checked afterwards.
            let results = Locked<[Int: ProcessResult]>([:])
            DispatchQueue.concurrentPerform(iterations: runs.count) { i in
                let result = try? runQConv(runs[i].arguments + ["--quiet"])
                results.withLock { $0[i] = result }
            }
            for (i, run) in runs.enumerated() {
                let command = "\(rule.name): \(run.arguments.joined(separator: " "))"
                guard let result = results.withLock({ $0[i] }) else { XCTFail("\(command) did not run"); continue }
                XCTAssertFalse(result.crashed, "\(command) crashed: \(result.stderr)")
                if rule.data && !run.readsData {
                    XCTAssertEqual(result.status, 0, "\(command) reads no data: \(result.stderr)")
                    continue
                }
                XCTAssertEqual(result.status, 3, "\(command): \(result.stderr)")
                XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, "\(command): \(result.stderr)")
                XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(path)"), "\(command): \(result.stderr)")
                XCTAssertTrue(rule.says.isEmpty || result.stderr.contains(rule.says), "\(command): \(result.stderr)")
            }
            XCTAssertEqual(directory.contents().filter { $0.hasPrefix("out") || $0.hasPrefix(".out") }.filter { !$0.contains("-dry") }, [],
                           "\(rule.name): nothing written")
            for name in directory.contents() where name.hasPrefix("out") { try FileManager.default.removeItem(atPath: directory.file(name)) }
        }
    }
}
