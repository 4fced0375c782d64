import XCTest
import QConvKit
import QConvTestSupport

/// Every rule of `SafeTensorsError`, each on a crafted file, asserting the exact case.
final class SafeTensorsValidationTests: XCTestCase {
    /// The header length prefix of a crafted file.
    private static func headerLength(_ input: CraftedInput) -> UInt64 {
        input.bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
    }

    private static func size(_ input: CraftedInput) -> UInt64 { UInt64(input.bytes.count) }

    /// The exact error each crafted file must raise, given its path.
    static let expectations: [String: (String, CraftedInput) -> SafeTensorsError] = [
        "empty_file": { p, _ in .fileTooShort(file: p, size: 0) },
        "seven_bytes": { p, _ in .fileTooShort(file: p, size: 7) },
        "header_length_over_limit": { p, _ in .headerTooLarge(file: p, length: 100_000_001) },
        "header_length_u64_max": { p, _ in .headerTooLarge(file: p, length: UInt64.max) },
        "header_past_end_of_file": { p, _ in .headerBeyondEndOfFile(file: p, length: 100, fileSize: 10) },
        "header_one_past_end_of_file": { p, _ in .headerBeyondEndOfFile(file: p, length: 5, fileSize: 12) },
        "header_invalid_utf8_byte": { p, _ in .headerNotUTF8(file: p) },
        "header_utf8_surrogate": { p, _ in .headerNotUTF8(file: p) },
        "header_overlong_utf8": { p, _ in .headerNotUTF8(file: p) },
        "json_empty": { p, _ in .headerNotJSON(file: p, reason: "unexpected end of JSON at byte 0") },
        "json_truncated": { p, _ in .headerNotJSON(file: p, reason: "expected ',' or '}' in an object at byte 19") },
        "json_trailing_comma_object": { p, _ in .headerNotJSON(file: p, reason: "expected a string key at byte 53") },
        "json_trailing_comma_array": { p, _ in .headerNotJSON(file: p, reason: "unexpected character ']' at byte 30") },
        "json_nan_literal": { p, _ in .headerNotJSON(file: p, reason: "unexpected character 'N' at byte 29") },
        "json_bad_escape": { p, _ in .headerNotJSON(file: p, reason: "invalid escape '\\x' at byte 5") },
        "json_lone_high_surrogate": { p, _ in .headerNotJSON(file: p, reason: "unpaired UTF-16 surrogate in \\u escape at byte 8") },
        "json_lone_low_surrogate": { p, _ in .headerNotJSON(file: p, reason: "unpaired UTF-16 surrogate in \\u escape at byte 8") },
        "json_deep_nesting": { p, _ in .headerNotJSON(file: p, reason: "JSON nested deeper than 128 levels at byte 128") },
        "json_deep_nesting_objects": { p, _ in .headerNotJSON(file: p, reason: "JSON nested deeper than 128 levels at byte 640") },
        "json_control_character": { p, _ in .headerNotJSON(file: p, reason: "control character in a string at byte 3") },
        "json_leading_zero": { p, _ in .headerNotJSON(file: p, reason: "number with a leading zero at byte 29") },
        "json_single_quotes": { p, _ in .headerNotJSON(file: p, reason: "expected a string key at byte 1") },
        "json_comment": { p, _ in .headerNotJSON(file: p, reason: "unexpected text after the JSON value at byte 3") },
        "json_two_values": { p, _ in .headerNotJSON(file: p, reason: "unexpected text after the JSON value at byte 2") },
        "json_byte_order_mark": { p, _ in .headerNotJSON(file: p, reason: "unexpected character 'ï' at byte 0") },
        "json_unquoted_key": { p, _ in .headerNotJSON(file: p, reason: "expected a string key at byte 1") },
        "header_is_array": { p, _ in .headerNotObject(file: p, found: "an array") },
        "header_is_string": { p, _ in .headerNotObject(file: p, found: "a string") },
        "header_is_number": { p, _ in .headerNotObject(file: p, found: "a number") },
        "header_is_null": { p, _ in .headerNotObject(file: p, found: "null") },
        "duplicate_tensor_name": { p, _ in .duplicateTensorName(file: p, tensor: "a") },
        "duplicate_metadata": { p, _ in .duplicateTensorName(file: p, tensor: "__metadata__") },
        "duplicate_metadata_key": { p, _ in .duplicateTensorName(file: p, tensor: "__metadata__.k") },
        "metadata_is_array": { p, _ in .metadataNotObject(file: p, found: "an array") },
        "metadata_is_string": { p, _ in .metadataNotObject(file: p, found: "a string") },
        "metadata_value_number": { p, _ in .metadataValueNotString(file: p, key: "epoch", found: "a number") },
        "metadata_value_null": { p, _ in .metadataValueNotString(file: p, key: "format", found: "null") },
        "metadata_value_object": { p, _ in .metadataValueNotString(file: p, key: "format", found: "an object") },
        "tensor_entry_is_array": { p, _ in .tensorEntryNotObject(file: p, tensor: "w", found: "an array") },
        "tensor_entry_is_string": { p, _ in .tensorEntryNotObject(file: p, tensor: "w", found: "a string") },
        "missing_dtype": { p, _ in .missingField(file: p, tensor: "w", field: "dtype") },
        "missing_shape": { p, _ in .missingField(file: p, tensor: "w", field: "shape") },
        "missing_data_offsets": { p, _ in .missingField(file: p, tensor: "w", field: "data_offsets") },
        "dtype_not_string": { p, _ in .invalidField(file: p, tensor: "w", field: "dtype", expected: "a string") },
        "shape_not_array": { p, _ in .invalidField(file: p, tensor: "w", field: "shape", expected: "an array of integers") },
        "shape_item_string": { p, _ in .invalidField(file: p, tensor: "w", field: "shape", expected: "an array of integers") },
        "data_offsets_three_items": { p, _ in
            .invalidField(file: p, tensor: "w", field: "data_offsets", expected: "an array of two integers [BEGIN, END]")
        },
        "data_offsets_one_item": { p, _ in
            .invalidField(file: p, tensor: "w", field: "data_offsets", expected: "an array of two integers [BEGIN, END]")
        },
        "data_offsets_not_array": { p, _ in
            .invalidField(file: p, tensor: "w", field: "data_offsets", expected: "an array of two integers [BEGIN, END]")
        },
        "data_offsets_item_null": { p, _ in .invalidField(file: p, tensor: "w", field: "data_offsets", expected: "an array of integers") },
        "field_given_twice": { p, _ in .invalidField(file: p, tensor: "w", field: "dtype", expected: "given once") },
        "float_in_shape": { p, _ in .numberOutOfRange(file: p, tensor: "w", field: "shape", value: "1.5") },
        "integral_float_in_shape": { p, _ in .numberOutOfRange(file: p, tensor: "w", field: "shape", value: "1.0") },
        "exponent_in_data_offsets": { p, _ in .numberOutOfRange(file: p, tensor: "w", field: "data_offsets", value: "4e0") },
        "unknown_dtype": { p, _ in .unknownDType(file: p, tensor: "w", dtype: "F128") },
        "lowercase_dtype": { p, _ in .unknownDType(file: p, tensor: "w", dtype: "f32") },
        "negative_shape": { p, _ in .negativeNumber(file: p, tensor: "w", field: "shape", value: "-1") },
        "negative_offset": { p, _ in .negativeNumber(file: p, tensor: "w", field: "data_offsets", value: "-4") },
        "offset_beyond_u64": { p, _ in .numberOutOfRange(file: p, tensor: "w", field: "data_offsets", value: "18446744073709551616") },
        "shape_beyond_u64": { p, _ in .numberOutOfRange(file: p, tensor: "w", field: "shape", value: "18446744073709551616") },
        "shape_beyond_int": { p, _ in .shapeOverflow(file: p, tensor: "w", shape: "[9223372036854775808]") },
        "offsets_reversed": { p, _ in .offsetsReversed(file: p, tensor: "w", begin: 8, end: 4) },
        "offsets_hole": { p, _ in .offsetsNotContiguous(file: p, tensor: "b", begin: 8, expected: 4) },
        "offsets_overlap": { p, _ in .offsetsNotContiguous(file: p, tensor: "b", begin: 4, expected: 8) },
        "offsets_same_range": { p, _ in .offsetsNotContiguous(file: p, tensor: "b", begin: 0, expected: 4) },
        "offsets_not_starting_at_zero": { p, _ in .offsetsNotContiguous(file: p, tensor: "w", begin: 4, expected: 0) },
        "shape_product_overflow": { p, _ in .shapeOverflow(file: p, tensor: "w", shape: "[4294967296, 4294967296]") },
        "byte_count_overflow": { p, _ in .byteCountOverflow(file: p, tensor: "w", shape: "[1152921504606846976]") },
        "f4_odd_element_count": { p, _ in .bitsNotByteAligned(file: p, tensor: "w", dtype: "F4", elements: 3) },
        "f6_one_element": { p, _ in .bitsNotByteAligned(file: p, tensor: "w", dtype: "F6_E2M3", elements: 1) },
        "size_mismatch_short": { p, _ in .tensorSizeMismatch(file: p, tensor: "w", expected: 8, actual: 4) },
        "size_mismatch_long": { p, _ in .tensorSizeMismatch(file: p, tensor: "w", expected: 4, actual: 8) },
        "data_beyond_end_of_file": { p, input in
            .dataBeyondEndOfFile(file: p, dataEnd: 8 + headerLength(input) + 8, fileSize: size(input))
        },
        "data_beyond_end_huge_tensor": { p, input in
            .dataBeyondEndOfFile(file: p, dataEnd: 8 + headerLength(input) + UInt64(Int.max / 8), fileSize: size(input))
        },
        "data_end_overflows_u64": { p, input in .dataBeyondEndOfFile(file: p, dataEnd: UInt64.max, fileSize: size(input)) },
        "trailing_bytes": { p, input in .trailingBytes(file: p, dataEnd: 8 + headerLength(input) + 8, fileSize: size(input)) },
        "trailing_bytes_after_empty_header": { p, _ in .trailingBytes(file: p, dataEnd: 10, fileSize: 11) },
    ]

    func testEveryCraftedFileHasAnExpectation() {
        let names = Set(CraftedInputs.invalidSafetensors.map(\.name))
        XCTAssertEqual(names.count, CraftedInputs.invalidSafetensors.count, "duplicate case names")
        XCTAssertEqual(names, Set(Self.expectations.keys))
    }

    func testEveryRuleRaisesItsExactError() throws {
        let folder = TemporaryDirectory()
        for input in CraftedInputs.invalidSafetensors {
            let path = input.create(in: folder.path)
            guard let expected = Self.expectations[input.name]?(path, input) else { continue }
            XCTAssertThrowsError(try SafeTensorsFile(path: path), input.name) { error in
                XCTAssertEqual(error as? SafeTensorsError, expected, "\(input.name): \(error)")
            }
            // Opening through Checkpoint reports the same error.
            XCTAssertThrowsError(try Checkpoint(path: path), input.name) { error in
                XCTAssertEqual(error as? SafeTensorsError, expected, input.name)
            }
        }
    }

    func testMessagesNameTheFileAndTheTensorOnOneLine() throws {
        let folder = TemporaryDirectory()
        for input in CraftedInputs.invalidSafetensors {
            let path = input.create(in: folder.path)
            XCTAssertThrowsError(try SafeTensorsFile(path: path)) { error in
                guard let error = error as? SafeTensorsError else { return XCTFail("\(input.name): \(error)") }
                XCTAssertEqual(error.category, .invalidInput)
                XCTAssertEqual(error.category.exitCode, 3)
                let message = error.description
                XCTAssertTrue(message.hasPrefix(path + ": "), "\(input.name): \(message)")
                XCTAssertFalse(message.contains("\n"), "\(input.name): \(message)")
                if let tensor = input.tensor {
                    XCTAssertTrue(message.contains("'\(tensor)'"), "\(input.name): \(message)")
                }
            }
        }
    }

    /// The reference reader checks the header length before anything else, so a
    /// huge length on a tiny file is "too large", not "beyond the end".
    func testRulesApplyInTheReferenceOrder() throws {
        let folder = TemporaryDirectory()
        func error(_ bytes: [UInt8]) -> SafeTensorsError? {
            let path = folder.file("order.safetensors")
            writeFile(path, bytes)
            do { _ = try SafeTensorsFile(path: path); return nil } catch { return error as? SafeTensorsError }
        }
        let path = folder.file("order.safetensors")
        // Unknown dtype is a JSON-level error: reported before a hole in the offsets.
        XCTAssertEqual(error(craftSafetensors(header: "{\"a\":\(tensorEntry("F32", [1], 4, 8)),\"b\":\(tensorEntry("Q9", [1], 8, 9))}", data: [UInt8](repeating: 0, count: 9))),
                       .unknownDType(file: path, tensor: "b", dtype: "Q9"))
        // Offsets are checked before sizes, in data order (not header order).
        XCTAssertEqual(error(craftSafetensors(header: "{\"b\":\(tensorEntry("F32", [2], 4, 8)),\"a\":\(tensorEntry("F32", [1], 0, 4))}", data: [UInt8](repeating: 0, count: 8))),
                       .tensorSizeMismatch(file: path, tensor: "b", expected: 8, actual: 4))
        // Size mismatch before data beyond the end of the file.
        XCTAssertEqual(error(craftSafetensors(header: "{\"a\":\(tensorEntry("F32", [1], 0, 8))}")),
                       .tensorSizeMismatch(file: path, tensor: "a", expected: 4, actual: 8))
        // Non-UTF-8 is reported even when the header would not parse either.
        XCTAssertEqual(error(craftSafetensors(headerBytes: [0x5B, 0xFF])), .headerNotUTF8(file: path))
    }

    // MARK: - Accepted files

    func testZeroSizeTensorsAndScalarsAreAccepted() throws {
        let folder = TemporaryDirectory()
        let zero = CraftedInputs.valid.first { $0.name == "zero_size_tensors" }!.create(in: folder.path)
        let file = try SafeTensorsFile(path: zero)
        XCTAssertEqual(file.tensors.map(\.name), ["e", "f", "g", "h"])
        XCTAssertEqual(file.entry(named: "f")?.info.shape, [3, 0, 5])
        XCTAssertEqual(file.entry(named: "f")?.info.elementCount, 0)
        XCTAssertEqual(file.entry(named: "f")?.info.byteCount, 0)
        XCTAssertEqual(file.entry(named: "h")?.dataOffsets, 4..<4)
        XCTAssertEqual(try file.bytes(of: file.entry(named: "e")!), [])
        XCTAssertEqual(try file.bytes(of: file.entry(named: "g")!), [0, 1, 2, 3])

        let scalars = try SafeTensorsFile(path: CraftedInputs.valid.first { $0.name == "scalars" }!.create(in: folder.path))
        XCTAssertEqual(scalars.tensors.map(\.name), ["s", "t", "u"])
        for entry in scalars.tensors {
            XCTAssertEqual(entry.info.shape, [])
            XCTAssertEqual(entry.info.elementCount, 1)
        }
        XCTAssertEqual(scalars.entry(named: "t")?.dataOffsets, 4..<12)
        XCTAssertEqual(try scalars.bytes(of: scalars.entry(named: "u")!), [12])
    }

    func testEveryValidCraftedFileOpens() throws {
        let folder = TemporaryDirectory()
        for input in CraftedInputs.valid {
            let path = input.create(in: folder.path)
            XCTAssertNoThrow(try SafeTensorsFile(path: path), input.name)
        }
    }

    func testEmptyHeadersAndMetadata() throws {
        let folder = TemporaryDirectory()
        func open(_ name: String) throws -> SafeTensorsFile {
            try SafeTensorsFile(path: CraftedInputs.valid.first { $0.name == name }!.create(in: folder.path))
        }
        let empty = try open("empty_header")
        XCTAssertTrue(empty.tensors.isEmpty)
        XCTAssertNil(empty.header.metadata)
        XCTAssertEqual(empty.header.dataStart, 10)
        XCTAssertEqual(try open("padded_header").header.headerLength, 8)
        XCTAssertNil(try open("null_metadata").header.metadata)
        let metadata = try XCTUnwrap(try open("metadata_only").header.metadata)
        XCTAssertEqual(metadata.map(\.key), ["format", "note"])
        XCTAssertEqual(metadata.map(\.value), ["pt", "é😀"])
        XCTAssertEqual(try open("metadata_last").header.metadata?.first?.value, "pt")
        XCTAssertEqual(try open("unicode_names").tensors.map(\.name), ["café", "😀"])
    }

    func testTensorsComeInDataOrder() throws {
        let folder = TemporaryDirectory()
        let file = try SafeTensorsFile(path: CraftedInputs.valid.first { $0.name == "offsets_out_of_header_order" }!.create(in: folder.path))
        XCTAssertEqual(file.tensors.map(\.name), ["early", "late"])
        XCTAssertEqual(try file.bytes(of: file.entry(named: "late")!), [5, 6, 7])
        XCTAssertEqual(file.header.dataLength, 8)
    }

    func testEveryDTypeOfTheFormatIsListedAndCopied() throws {
        XCTAssertEqual(DType.allCases.map(\.rawValue).sorted(), CraftedInputs.factsDTypes.map(\.name).sorted())
        for (name, bits) in CraftedInputs.factsDTypes {
            XCTAssertEqual(DType(rawValue: name)?.bitWidth, bits, name)
        }
        let folder = TemporaryDirectory()
        let path = CraftedInputs.valid.first { $0.name == "every_dtype" }!.create(in: folder.path)
        let checkpoint = try Checkpoint(path: path)
        XCTAssertEqual(checkpoint.tensors.map(\.info.dtype.rawValue), CraftedInputs.factsDTypes.map(\.name))
        for tensor in checkpoint.tensors {
            XCTAssertEqual(tensor.info.byteCount, tensor.info.dtype.bitWidth, tensor.name)
        }

        // Copied through the writer, every dtype comes back with the same bytes.
        let output = folder.file("copy.safetensors")
        let writer = try CheckpointWriter(destination: output, layout: .file, tensors: checkpoint.tensors.map(\.info),
                                          metadata: checkpoint.metadata, overwrite: false, inputs: checkpoint.filePaths)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
        defer { buffer.deallocate() }
        for tensor in checkpoint.tensors { try writer.copy(tensor.stored, buffer: buffer) }
        try writer.commit()
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)), try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func testByteCountOfDTypes() {
        XCTAssertEqual(byteCount(of: .f4, elementCount: 2), 1)
        XCTAssertNil(byteCount(of: .f4, elementCount: 3))
        XCTAssertEqual(byteCount(of: .f6e3m2, elementCount: 4), 3)
        XCTAssertNil(byteCount(of: .f6e3m2, elementCount: 2))
        XCTAssertEqual(byteCount(of: .c64, elementCount: 3), 24)
        XCTAssertNil(byteCount(of: .f64, elementCount: Int.max / 4))
        XCTAssertEqual(DType(commandLineName: "BFloat16"), .bf16)
        XCTAssertEqual(DType(commandLineName: "half"), .f16)
        XCTAssertEqual(DType(commandLineName: "fp32"), .f32)
        XCTAssertNil(DType(commandLineName: "f64"))
        XCTAssertEqual(DType.allCases.filter(\.isDecodableToFloat), [.f8e5m2, .f8e4m3, .f16, .bf16, .f32, .f64])
        XCTAssertEqual(DType.allCases.filter(\.isEncodableFromFloat), [.f16, .bf16, .f32, .f64])
        XCTAssertEqual(DType.f4.byteWidth, nil)
        XCTAssertEqual(DType.bf16.byteWidth, 2)
    }

    // MARK: - Robustness

    /// Hundreds of corruptions of a valid file: each opens or throws a
    /// `SafeTensorsError`, never anything else (and never crashes).
    func testMutatedFilesOpenOrThrowSafeTensorsErrors() throws {
        let original = craftSafetensors(
            header: "{\"__metadata__\":{\"format\":\"pt\"},\"a\":\(tensorEntry("F16", [2, 3], 0, 12)),\"b\":\(tensorEntry("BF16", [], 12, 14)),\"c\":\(tensorEntry("F4", [4], 14, 16))}",
            data: (0..<16).map { UInt8($0) })
        let folder = TemporaryDirectory()
        let path = folder.file("mutant.safetensors")
        var opened = 0, rejected = 0
        for bytes in mutations(of: original, count: 600, seed: 0x5AFE) {
            writeFile(path, bytes)
            do {
                let file = try SafeTensorsFile(path: path)
                for entry in file.tensors { _ = try file.bytes(of: entry) }
                opened += 1
            } catch is SafeTensorsError {
                rejected += 1
            } catch {
                XCTFail("unexpected error \(error) for \(bytes)")
            }
        }
        XCTAssertEqual(opened + rejected, 600)
        XCTAssertGreaterThan(rejected, 400)
    }
}
