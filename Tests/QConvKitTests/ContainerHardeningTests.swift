import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Crafted containers that a reader must refuse (or handle) safely: embedded
/// file names, gaps between regions, side-part contents, header field types,
/// and what a model folder contributes as embedded files.
final class ContainerHardeningTests: XCTestCase {
    private func editor(_ path: String) -> ContainerEditor { ContainerEditor(path: path, hash: XXHash64.hash) }

    /// A fresh copy of `original` to craft.
    private func copy(_ original: String, in directory: TemporaryDirectory, as name: String = "crafted.qc") throws -> String {
        let path = directory.file(name)
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: original, toPath: path)
        return path
    }

    /// `body` throws exactly `expected`, an invalid-input error of one line that names the file.
    private func assertRefused<T>(_ body: @autoclosure () throws -> T, _ expected: ContainerError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? ContainerError, expected, file: file, line: line)
            guard let error = error as? QConvError else { return }
            XCTAssertEqual(error.category.exitCode, 3, file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), error.description, file: file, line: line)
            if case let .unsafeEmbeddedFileName(path, _, _) = expected {
                XCTAssertTrue(error.description.hasPrefix(path), error.description, file: file, line: line)
            }
        }
    }

    private func setFileName(_ path: String, _ name: String) throws {
        try editor(path).rewriteHeader { header in
            var files = header["files"] as! [[String: Any]]
            files[0]["name"] = name
            header["files"] = files
        }
    }

    // MARK: - Embedded file names (finding 1)

    func testUnsafeEmbeddedFileNamesAreRefused() throws {
        let directory = TemporaryDirectory()
        let original = try makeSampleContainer(in: directory)
        let refused: [(name: String, reason: String)] = [
            ("", "the name is empty"),
            ("../evil", "'..' is not a file name"),
            ("sub/../../evil", "'..' is not a file name"),
            ("/etc/passwd", "the name starts with '/'; it must be a relative path"),
            ("sub//config.json", "the name has an empty component ('//' or a trailing '/')"),
            ("sub/", "the name has an empty component ('//' or a trailing '/')"),
            ("sub/.git/config", "the name starts with '.' (hidden files are not carried)"),
            ("a/b/c/d/e.json", "the name is nested deeper than 3 folders"),
            ("model.safetensors/config.json", "the name is one of the weight files dequant writes"),
            ("a\u{0}b", "the name contains a NUL byte"),
            ("a\nb", "the name contains the control character U+000A"),
            (".", "'.' is not a file name"),
            ("..", "'..' is not a file name"),
            (".env", "the name starts with '.' (hidden files are not carried)"),
            ("model.safetensors", "the name is one of the weight files dequant writes"),
            ("model-00001-of-00002.safetensors", "the name is one of the weight files dequant writes"),
            ("model.safetensors.index.json", "the name is one of the weight files dequant writes"),
            (String(repeating: "a", count: 256), "the name is longer than 255 bytes"),
        ]
        for (name, reason) in refused {
            let path = try copy(original, in: directory)
            try setFileName(path, name)
            assertRefused(try ContainerFile(path: path), .unsafeEmbeddedFileName(file: path, name: name, reason: reason))
        }
        // Names that are fine, including ones that merely resemble weight files.
        for name in ["tokenizer.model", "generation_config.json", "model.safetensors.txt", "model-1.safetensors", "a..b", "1_Pooling/config.json",
                     "a/b/c/d.json"] {
            let path = try copy(original, in: directory)
            try setFileName(path, name)
            XCTAssertEqual(try ContainerFile(path: path).header.files.map(\.name), [name])
        }
    }

    func testDuplicateEmbeddedFileNamesAreRefused() throws {
        let directory = TemporaryDirectory()
        let path = try makeSampleContainer(in: directory)
        // A second zero-length entry at the end of the first file, with the same name.
        try editor(path).rewriteHeader { header in
            var files = header["files"] as! [[String: Any]]
            var second = files[0]
            second["offset"] = (files[0]["offset"] as! Int) + (files[0]["length"] as! Int)
            second["length"] = 0
            second["xxh64"] = "ef46db3751d8e999"
            files.append(second)
            header["files"] = files
        }
        assertRefused(try ContainerFile(path: path), .duplicateEmbeddedFileName(file: path, name: "config.json"))
    }

    func testDequantOfARefusedNameWritesNothing() throws {
        let directory = TemporaryDirectory()
        let path = try makeSampleContainer(in: directory)
        try setFileName(path, "../evil")
        let output = directory.file("out/model")
        try FileManager.default.createDirectory(atPath: directory.file("out"), withIntermediateDirectories: false)
        XCTAssertThrowsError(try Dequantizer.dequantize(try Model.open(path), to: output, options: Dequantizer.Options())) { error in
            XCTAssertEqual(error as? ContainerError, .unsafeEmbeddedFileName(file: path, name: "../evil", reason: "'..' is not a file name"))
        }
        XCTAssertEqual(directory.contents(), ["model.qc", "out"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("out/evil")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("evil")))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.file("out")), [])
    }

    func testDamagedEmbeddedFileIsNamedAsAnEmbeddedFile() throws {
        let directory = TemporaryDirectory()
        let path = try makeSampleContainer(in: directory)
        let container = try ContainerFile(path: path)
        let file = container.header.files[0]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[Int(container.dataStart + file.offset) + 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let damaged = try ContainerFile(path: path)
        for check in [{ _ = try IntegrityCheck.check(damaged) }, { _ = try damaged.readFile(file) }] {
            XCTAssertThrowsError(try check()) { error in
                guard case let .embeddedFileChecksumMismatch(_, name, expected, _)? = error as? ContainerError else { return XCTFail("\(error)") }
                XCTAssertEqual(name, "config.json")
                XCTAssertEqual(expected.count, 16)
                XCTAssertTrue("\(error)".contains("embedded file 'config.json': checksum mismatch"), "\(error)")
                XCTAssertFalse("\(error)".contains("tensor"), "\(error)")
            }
        }
    }

    // MARK: - Gaps between regions (finding 2)

    func testGapsOfTheAlignmentOrMoreAreRefused() throws {
        let directory = TemporaryDirectory()
        let original = try makeSampleContainer(in: directory)
        let tensors = try ContainerFile(path: original).tensors
        let tensor = tensors[3], previous = tensors[2].parts.last!
        let padding = tensor.parts[0].offset - (previous.offset + previous.length)
        for gap in [64, 4 << 20, (4 << 20) + 64] {
            let path = try copy(original, in: directory)
            try editor(path).insertGap(beforeTensor: tensor.name, count: gap)
            assertRefused(try ContainerFile(path: path),
                          .gapTooLarge(file: path, tensor: tensor.name, part: tensor.parts[0].name.rawValue, gap: padding + UInt64(gap)))
        }
        // Padding to the alignment alone is fine.
        XCTAssertLessThan(padding, 64)
        XCTAssertNoThrow(try IntegrityCheck.check(try ContainerFile(path: original)))
    }

    // MARK: - Side-part contents (finding 3)

    private func int8Container(in directory: TemporaryDirectory) throws -> (path: String, tensor: ContainerHeader.Tensor) {
        let path = try makeSampleContainer(in: directory, method: .int8(outliers: .absolute(0.06)))
        let tensor = try XCTUnwrap(try ContainerFile(path: path).tensors.first { tensor in
            if case let .int8(p) = tensor.scheme { return p.outlierColumnCount >= 2 }
            return false
        }, "the sample has int8 tensors with outlier columns")
        return (path, tensor)
    }

    private func setOutlierColumns(_ path: String, tensor: String, _ change: (inout [Int32]) -> Void) throws {
        try editor(path).changePart(tensor: tensor, part: "outlier_columns") { bytes in
            var columns = stride(from: 0, to: bytes.count, by: 4).map { i in
                Int32(bitPattern: bytes[i..<i + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            }
            change(&columns)
            bytes = columns.flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: UInt32(bitPattern: value) >> (8 * $0)) } }
        }
    }

    func testIntegrityCheckRefusesWhatTheDecoderRefuses() throws {
        let directory = TemporaryDirectory()
        let (original, tensor) = try int8Container(in: directory)
        let columns = tensor.info.matrixShape.columns
        // The change, and the position of the first entry that breaks the rule (-1: the last).
        let cases: [(String, (inout [Int32]) -> Void, Int)] = [
            ("out of range", { $0[0] = 100_000 }, 0),
            ("one past the last column", { $0[$0.count - 1] = Int32(columns) }, -1),
            ("negative", { $0[0] = -1 }, 0),
            ("repeated", { $0[1] = $0[0] }, 1),
            ("descending", { $0.swapAt(0, 1) }, 1),
        ]
        for (label, change, position) in cases {
            let path = try copy(original, in: directory)
            var stored: [Int32] = []
            try setOutlierColumns(path, tensor: tensor.name) { change(&$0); stored = $0 }
            let at = position >= 0 ? position : stored.count + position
            let expected = ContainerError.invalidOutlierColumn(file: path, tensor: tensor.name, position: at,
                                                               column: Int(stored[at]), columns: columns)
            let container = try ContainerFile(path: path)  // the structure is intact
            XCTAssertThrowsError(try IntegrityCheck.check(container), label) { XCTAssertEqual($0 as? ContainerError, expected, label) }
            let crafted = try XCTUnwrap(ContainerReader.model(of: container).tensor(named: tensor.name))
            XCTAssertThrowsError(try TensorDecoder(crafted), label) {
                XCTAssertEqual($0 as? ContainerError, expected, label)
            }
        }
        // Unchanged, both accept it.
        let container = try ContainerFile(path: original)
        XCTAssertNoThrow(try IntegrityCheck.check(container))
        XCTAssertNoThrow(try TensorDecoder(try XCTUnwrap(ContainerReader.model(of: container).tensor(named: tensor.name))))
    }

    // MARK: - Header field types and values (findings 4 and 5)

    /// Applies `change` to a copy of `original` and expects `expected(path)`.
    private func expectHeader(_ original: String, in directory: TemporaryDirectory, _ expected: (String) -> ContainerError,
                              line: UInt = #line, _ change: @escaping (inout [String: Any]) -> Void) throws {
        let path = try copy(original, in: directory)
        try editor(path).rewriteHeader(change)
        assertRefused(try ContainerFile(path: path), expected(path), line: line)
    }

    private func params(of name: String, _ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
        { header in
            var tensors = header["tensors"] as! [[String: Any]]
            let index = tensors.firstIndex { $0["name"] as? String == name }!
            var params = tensors[index]["params"] as! [String: Any]
            change(&params)
            tensors[index]["params"] = params
            header["tensors"] = tensors
        }
    }

    func testHeaderVersionMustBeOne() throws {
        let directory = TemporaryDirectory()
        let original = try makeSampleContainer(in: directory)
        try expectHeader(original, in: directory, { .headerVersionMismatch(file: $0, found: "2") }) { $0["version"] = 2 }
        try expectHeader(original, in: directory, { .headerVersionMismatch(file: $0, found: "\"1\"") }) { $0["version"] = "1" }
        try expectHeader(original, in: directory, { .headerVersionMismatch(file: $0, found: "null") }) { $0["version"] = nil }
    }

    func testFourBitParametersNeedTheirDocumentedTypes() throws {
        let directory = TemporaryDirectory()
        let original = try makeSampleContainer(in: directory)
        let name = try ContainerFile(path: original).tensors.first { $0.scheme.name == "nf4" }!.name
        func field(_ field: String, _ expected: String) -> (String) -> ContainerError {
            { .invalidField(file: $0, tensor: name, field: field, expected: expected) }
        }
        try expectHeader(original, in: directory, field("params.double_quant", "true or false"), params(of: name) { $0["double_quant"] = "yes" })
        try expectHeader(original, in: directory, field("params.double_quant", "true or false"), params(of: name) { $0["double_quant"] = nil })
        try expectHeader(original, in: directory, field("params.nested_block_size", "an integer in 0...2^64-1"),
                         params(of: name) { $0["nested_block_size"] = "256" })
        try expectHeader(original, in: directory, { .invalidParameter(file: $0, tensor: name, parameter: "nested_block_size", reason: "must be 256, found 128") },
                         params(of: name) { $0["nested_block_size"] = 128 })
        try expectHeader(original, in: directory, field("params.offset", "a number or null"), params(of: name) { $0["offset"] = "0.04" })
        try expectHeader(original, in: directory, { .invalidParameter(file: $0, tensor: name, parameter: "offset_bits", reason: "must be 8 lower-case hex digits, found '3D2028E1'") },
                         params(of: name) { $0["offset_bits"] = "3D2028E1" })
        try expectHeader(original, in: directory, { .invalidField(file: $0, tensor: "", field: "files[].xxh64", expected: "16 lower-case hex digits") }) { header in
            var files = header["files"] as! [[String: Any]]
            files[0]["xxh64"] = "+" + String((files[0]["xxh64"] as! String).dropFirst())
            header["files"] = files
        }
    }

    func testInt8ParametersNeedTheirDocumentedTypes() throws {
        let directory = TemporaryDirectory()
        let (original, tensor) = try int8Container(in: directory)
        let name = tensor.name
        try expectHeader(original, in: directory, { .invalidField(file: $0, tensor: name, field: "params.outlier_rule", expected: "a string") },
                         params(of: name) { $0["outlier_rule"] = nil })
        try expectHeader(original, in: directory, { .unknownOutlierRule(file: $0, tensor: name, rule: "unknown") },
                         params(of: name) { $0["outlier_rule"] = "unknown" })
        try expectHeader(original, in: directory, { .unknownOutlierRule(file: $0, tensor: name, rule: "abs:-1") },
                         params(of: name) { $0["outlier_rule"] = "abs:-1" })
        try expectHeader(original, in: directory, { .invalidField(file: $0, tensor: name, field: "params.outlier_threshold", expected: "a number or null") },
                         params(of: name) { $0["outlier_threshold"] = "6" })
        // A readable rule is what the tensor is quantized with again: its scheme holds the rule itself, never a guess.
        let container = try ContainerFile(path: original)
        guard case .int8(let outliers)? = try XCTUnwrap(container.tensor(named: tensor.name)).scheme.method else { return XCTFail("int8 expected") }
        XCTAssertEqual(outliers, .absolute(0.06))
    }

    // MARK: - What a model folder embeds (finding 6)

    func testWeightFilesOfAModelFolderAreNotEmbedded() throws {
        let directory = TemporaryDirectory()
        let folder = directory.file("model")
        try FileManager.default.createDirectory(atPath: folder + "/subfolder", withIntermediateDirectories: true)
        let source = Fixtures.sample("lora_llama_basic/base")
        for name in ["model.safetensors", "config.json"] {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: folder + "/" + name)
        }
        let large = [UInt8](repeating: 7, count: 1 << 20)
        for name in ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt", "tf_model.h5",
                     "flax_model.msgpack", "model.onnx", "model.gguf", "rust_model.ot", "weights.npz", "model.tflite",
                     "OTHER.SAFETENSORS", "PYTORCH_MODEL.BIN", ".hidden.json", "subfolder/inner.json"] {
            writeFile(folder + "/" + name, large)
        }
        writeFile(folder + "/tokenizer.model", [1, 2, 3])
        let checkpoint = try Checkpoint(path: folder)
        XCTAssertEqual(checkpoint.auxiliaryFiles, ["config.json", "subfolder/inner.json", "tokenizer.model"])
        let output = directory.file("model.qc")
        let report = try Quantizer.convert(try SafeTensorsReader.model(of: checkpoint), to: output,
                                           options: Quantizer.Options(method: .fourBit(.nf4, blockSize: 64, doubleQuant: true),
                                                                      selection: try TensorSelection(), threads: 2))
        XCTAssertEqual(report.embeddedFiles, ["config.json", "subfolder/inner.json", "tokenizer.model"])
        let container = try ContainerFile(path: output)
        XCTAssertEqual(container.header.files.map(\.name), ["config.json", "subfolder/inner.json", "tokenizer.model"])
        // Of the 15 MB of other files, only the 1 MB file of the subfolder came along.
        XCTAssertLessThan(container.file.size, checkpoint.shards[0].file.size + UInt64(large.count))
    }

    func testAnEmbeddedFileThatIsAlsoAFolderIsRefused() throws {
        let directory = TemporaryDirectory()
        let original = try makeSampleContainer(in: directory)
        try editor(original).rewriteHeader { header in
            var files = header["files"] as! [[String: Any]]
            var second = files[0]
            files[0]["name"] = "pooling"
            second["name"] = "pooling/config.json"
            second["offset"] = (files[0]["offset"] as! Int) + (files[0]["length"] as! Int)
            second["length"] = 0
            second["xxh64"] = "ef46db3751d8e999"
            files.insert(second, at: 1)
            header["files"] = files
        }
        assertRefused(try ContainerFile(path: original), .embeddedFileIsAlsoAFolder(file: original, name: "pooling"))
    }
}
