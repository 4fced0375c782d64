import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Converts the sharded sample into `directory/model.qc` and returns its path.
func makeSampleContainer(in directory: TemporaryDirectory, method: QuantizationMethod = .fourBit(.nf4, blockSize: 64, doubleQuant: true)) throws -> String {
    let output = directory.file("model.qc")
    _ = try Quantizer.convert(try Model.open(Fixtures.sample("sharded_llama")), to: output,
                              options: Quantizer.Options(method: method, selection: try TensorSelection(), threads: 2))
    return output
}

/// The container: checksums, round trips through the writer and reader, and
/// one crafted file per validation rule.
final class ContainerTests: XCTestCase {
    func testXXHash64MatchesReferenceVectors() {
        // Digests from the reference implementation (pip install xxhash).
        let cases: [([UInt8], UInt64)] = [
            ([], 0xef46db3751d8e999), (Array("a".utf8), 0xd24ec4f1a98c6e5b), (Array("abc".utf8), 0x44bc2cf5ad770999),
            (Array(repeating: UInt8(ascii: "x"), count: 31), 0x60dd0d01083b99f0),
            (Array(repeating: UInt8(ascii: "x"), count: 32), 0xe2df261fc2ec30eb),
            (Array(String(repeating: "0123456789", count: 10).utf8), 0xf80e7b96315afffa),
        ]
        for (bytes, expected) in cases {
            XCTAssertEqual(XXHash64.hash(bytes), expected, "length \(bytes.count)")
            // Fed in uneven pieces, the digest is the same.
            var hasher = XXHash64()
            var start = 0
            for step in [1, 3, 7, 33, 5, 64] where start < bytes.count {
                let end = min(bytes.count, start + step)
                bytes[start..<end].withUnsafeBytes { hasher.update($0) }
                start = end
            }
            if start < bytes.count { bytes[start...].withUnsafeBytes { hasher.update($0) } }
            XCTAssertEqual(hasher.digest(), expected, "streamed, length \(bytes.count)")
        }
    }

    /// Converts the sharded sample and returns the container path.
    func makeContainer(in directory: TemporaryDirectory, method: QuantizationMethod = .fourBit(.nf4, blockSize: 64, doubleQuant: true)) throws -> String {
        try makeSampleContainer(in: directory, method: method)
    }

    func testContainerKeepsOrderMetadataFilesAndRawTensors() throws {
        let directory = TemporaryDirectory()
        let source = try Checkpoint(path: Fixtures.sample("sharded_llama"))
        let container = try ContainerFile(path: try makeContainer(in: directory))
        XCTAssertEqual(container.tensors.map(\.name), source.tensors.map(\.name))
        XCTAssertEqual(container.header.metadata?.map(\.key), ["format"])
        XCTAssertEqual(container.header.files.map(\.name), ["config.json"])
        let config = try container.readFile(container.header.files[0])
        XCTAssertEqual(Data(config), try Data(contentsOf: URL(fileURLWithPath: Fixtures.sample("sharded_llama/config.json"))))
        for tensor in container.tensors {
            let original = try XCTUnwrap(source.tensor(named: tensor.name))
            XCTAssertEqual(tensor.info, original.info)
            let expectedScheme = tensor.info.shape.count >= 2 && !TensorSelection.isLeftUnquantizedByDefault(tensor.name) ? "nf4" : "raw"
            XCTAssertEqual(tensor.scheme.name, expectedScheme, tensor.name)
            if tensor.scheme == .raw {
                XCTAssertEqual(try container.readPart(tensor.parts[0], of: tensor.name), try original.stored.allBytes(), tensor.name)
            }
            for part in tensor.parts { XCTAssertEqual(part.offset % 64, 0, "\(tensor.name)/\(part.name) aligned") }
        }
        XCTAssertEqual(container.dataStart % 64, 0)
    }

    func testIntegrityCheckPassesOnAFreshContainer() throws {
        let directory = TemporaryDirectory()
        let report = try IntegrityCheck.check(try ContainerFile(path: try makeContainer(in: directory)))
        XCTAssertEqual(report.tensorCount, 21)
        XCTAssertEqual(report.fileCount, 1)
    }

    // MARK: - Damaged containers

    func testFlippedDataByteIsACheckSumMismatchNamingTensorAndPart() throws {
        let directory = TemporaryDirectory()
        let path = try makeContainer(in: directory)
        let container = try ContainerFile(path: path)
        let tensor = container.tensors.first { $0.scheme.name == "nf4" }!
        let part = tensor.parts[0]
        try mutate(path) { $0[Int(container.dataStart + part.offset) + 3] ^= 0x10 }
        let damaged = try ContainerFile(path: path)  // the structure is intact
        XCTAssertThrowsError(try IntegrityCheck.check(damaged)) { error in
            guard case let .checksumMismatch(_, name, partName, _, _)? = error as? ContainerError else { return XCTFail("\(error)") }
            XCTAssertEqual(name, tensor.name)
            XCTAssertEqual(partName, "codes")
        }
        XCTAssertThrowsError(try TensorDecoder(try XCTUnwrap(ContainerReader.model(of: damaged).tensor(named: tensor.name))))
    }

    func testTruncatedTailNamesTheLastPart() throws {
        let directory = TemporaryDirectory()
        let path = try makeContainer(in: directory)
        let last = try ContainerFile(path: path).tensors.last!
        try mutate(path) { $0.removeLast(10) }
        XCTAssertThrowsError(try ContainerFile(path: path)) { error in
            guard case let .partBeyondEndOfFile(_, tensor, part, _, _)? = error as? ContainerError else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, last.name)
            XCTAssertEqual(part, last.parts.last!.name.rawValue)
        }
    }

    func testPrefixRules() throws {
        let directory = TemporaryDirectory()
        let path = try makeContainer(in: directory)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        func expect(_ expected: ContainerError, _ change: (inout Data) -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
            var bytes = original
            change(&bytes)
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try ContainerFile(path: path), file: file, line: line) { error in
                XCTAssertEqual(error as? ContainerError, expected, file: file, line: line)
            }
        }
        try expect(.fileTooShort(file: path, size: 20)) { $0 = $0.prefix(20) }
        try expect(.notAContainer(file: path)) { $0[0] = UInt8(ascii: "X") }
        try expect(.unsupportedVersion(file: path, version: 2)) { $0[8] = 2 }
        try expect(.unsupportedFlags(file: path, flags: 1)) { $0[12] = 1 }
        func setLength(_ value: UInt64) -> (inout Data) -> Void {
            { bytes in var v = value.littleEndian; bytes.replaceSubrange(16..<24, with: withUnsafeBytes(of: &v) { Array($0) }) }
        }
        try expect(.headerTooLarge(file: path, length: 100_000_001), setLength(100_000_001))
        try expect(.headerBeyondEndOfFile(file: path, length: 99_000_000, fileSize: UInt64(original.count)), setLength(99_000_000))
        try expect(.headerChecksumMismatch(file: path)) { $0[40] ^= 1 }
        try expect(.trailingBytes(file: path, dataEnd: UInt64(original.count), fileSize: UInt64(original.count + 3))) { $0.append(contentsOf: [0, 0, 0]) }
    }

    func testPaddingMustBeZero() throws {
        let directory = TemporaryDirectory()
        let path = try makeContainer(in: directory)
        let container = try ContainerFile(path: path)
        // A part whose end is not 64-aligned is followed by padding before the next region.
        let parts = container.tensors.flatMap(\.parts)
        let padded = try XCTUnwrap(parts.dropLast().first { ($0.offset + $0.length) % 64 != 0 })
        let previousEnd = padded.offset + padded.length
        try mutate(path) { $0[Int(container.dataStart + previousEnd)] = 7 }
        XCTAssertThrowsError(try IntegrityCheck.check(try ContainerFile(path: path))) { error in
            XCTAssertEqual(error as? ContainerError, .paddingNotZero(file: path, offset: container.dataStart + previousEnd))
        }
    }

    func testHeaderRules() throws {
        let directory = TemporaryDirectory()
        let path = try makeContainer(in: directory)
        let name = try ContainerFile(path: path).tensors.first { $0.scheme.name == "nf4" }!.name
        func expect(_ check: (ContainerError) -> Bool, _ change: (inout [String: Any]) -> Void, line: UInt = #line) throws {
            let copy = directory.file("crafted.qc")
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            try rewriteHeader(copy, change)
            XCTAssertThrowsError(try ContainerFile(path: copy), line: line) { error in
                XCTAssertTrue((error as? ContainerError).map(check) ?? false, "\(error)", line: line)
            }
        }
        func tensor(_ header: inout [String: Any], _ change: (inout [String: Any]) -> Void) {
            var tensors = header["tensors"] as! [[String: Any]]
            let index = tensors.firstIndex { $0["name"] as? String == name }!
            change(&tensors[index])
            header["tensors"] = tensors
        }
        try expect({ if case .unknownScheme(_, name, "nf5") = $0 { return true }; return false }) { h in tensor(&h) { $0["scheme"] = "nf5" } }
        try expect({ if case .unknownDType(_, name, "F17") = $0 { return true }; return false }) { h in tensor(&h) { $0["dtype"] = "F17" } }
        try expect({ if case .invalidField(_, "", "format", _) = $0 { return true }; return false }) { $0["format"] = "other" }
        try expect({ if case .invalidField(_, "", "tensors", _) = $0 { return true }; return false }) { $0["tensors"] = 3 }
        try expect({ if case .duplicateTensorName(_, name) = $0 { return true }; return false }) { h in
            var tensors = h["tensors"] as! [[String: Any]]
            tensors.append(tensors.first { $0["name"] as? String == name }!)
            h["tensors"] = tensors
        }
        try expect({ if case .wrongParts(_, name, _, _) = $0 { return true }; return false }) { h in
            tensor(&h) { t in var parts = t["parts"] as! [[String: Any]]; parts.removeLast(); t["parts"] = parts }
        }
        try expect({ if case .partSizeMismatch(_, name, "codes", _, _) = $0 { return true }; return false }) { h in
            tensor(&h) { t in var parts = t["parts"] as! [[String: Any]]; parts[0]["length"] = (parts[0]["length"] as! Int) - 1; t["parts"] = parts }
        }
        try expect({ if case .partMisaligned(_, name, "codes", _) = $0 { return true }; return false }) { h in
            tensor(&h) { t in var parts = t["parts"] as! [[String: Any]]; parts[0]["offset"] = (parts[0]["offset"] as! Int) + 1; t["parts"] = parts }
        }
        try expect({ if case .partOverlap(_, name, "codes", _, _) = $0 { return true }; return false }) { h in
            tensor(&h) { t in var parts = t["parts"] as! [[String: Any]]; parts[0]["offset"] = 0; t["parts"] = parts }
        }
        try expect({ if case .invalidParameter(_, name, "block_size", _) = $0 { return true }; return false }) { h in
            tensor(&h) { t in var params = t["params"] as! [String: Any]; params["block_size"] = 3; t["params"] = params }
        }
        try expect({ if case .invalidShape(_, name, _) = $0 { return true }; return false }) { h in
            tensor(&h) { $0["shape"] = [1 << 40, 1 << 40] }
        }
        try expect({ if case .headerNotJSON = $0 { return true }; return false }) { $0 = ["__raw__": "{"] }
    }

    // MARK: - Helpers

    func mutate(_ path: String, _ change: (inout Data) -> Void) throws {
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        change(&bytes)
        try bytes.write(to: URL(fileURLWithPath: path))
    }

    /// Rewrites the JSON header in place (same reserved length) with a valid checksum,
    /// so that only the rule under test is broken. `["__raw__": text]` writes `text` verbatim.
    func rewriteHeader(_ path: String, _ change: (inout [String: Any]) -> Void) throws {
        try ContainerEditor(path: path, hash: XXHash64.hash).rewriteHeader(change)
    }
}
