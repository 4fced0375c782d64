import Foundation

/// One crafted input on disk: a safetensors file or a model folder built to
/// break (or pass) exactly one rule of the readers.
///
/// The unit tests assert the exact error each one raises; the end-to-end tests
/// run every one through the binary. Keeping the bytes here means both see the
/// same files.
public struct CraftedInput {
    /// Unique identifier; also the name of the case's folder on disk.
    public let name: String
    /// Files to create, relative to the case's folder.
    public let files: [(path: String, bytes: [UInt8])]
    /// What to open, relative to the case's folder; "" is the folder itself.
    public let target: String
    /// The tensor the error message must name, if the rule is about one tensor.
    public let tensor: String?

    /// Creates the files under `root/name` and returns the path to open.
    @discardableResult
    public func create(in root: String) -> String {
        let folder = root + "/" + name
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in files {
            let path = folder + "/" + file.path
            let parent = (path as NSString).deletingLastPathComponent
            try! FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            writeFile(path, file.bytes)
        }
        return target.isEmpty ? folder : folder + "/" + target
    }

    /// The single file of a one-file case (its header is what the reader sees).
    public var bytes: [UInt8] { files[0].bytes }
}

/// A header entry `{"dtype":..,"shape":..,"data_offsets":[begin,end]}`.
public func tensorEntry(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
    "{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
}

/// The 8-byte little-endian length prefix followed by `header` (raw bytes) and `data`.
public func craftSafetensors(headerBytes header: [UInt8], data: [UInt8] = [], lengthOverride: UInt64? = nil) -> [UInt8] {
    var length = (lengthOverride ?? UInt64(header.count)).littleEndian
    return withUnsafeBytes(of: &length) { Array($0) } + header + data
}

public enum CraftedInputs {
    /// A one-file case from a header string and `dataBytes` bytes of data (0, 1, 2, ...).
    static func header(_ name: String, tensor: String? = nil, _ json: String, dataBytes: Int = 0, length: UInt64? = nil, padded: Bool = false) -> CraftedInput {
        let data = (0..<dataBytes).map { UInt8(truncatingIfNeeded: $0) }
        // Padded as the reference writer pads: spaces up to a multiple of 8.
        let text = padded ? json + String(repeating: " ", count: (8 - json.utf8.count % 8) % 8) : json
        return file(name, tensor: tensor, craftSafetensors(header: text, data: data, lengthOverride: length))
    }

    static func file(_ name: String, tensor: String? = nil, _ bytes: [UInt8]) -> CraftedInput {
        CraftedInput(name: name, files: [("input.safetensors", bytes)], target: "input.safetensors", tensor: tensor)
    }

    static func folder(_ name: String, tensor: String? = nil, _ files: [(String, [UInt8])]) -> CraftedInput {
        CraftedInput(name: name, files: files.map { (path: $0.0, bytes: $0.1) }, target: "", tensor: tensor)
    }

    /// A valid one-tensor F32 file holding `values`.
    public static func validF32(_ name: String, _ values: [Float], metadata: Bool = true) -> [UInt8] {
        let meta = metadata ? "\"__metadata__\":{\"format\":\"pt\"}," : ""
        let json = "{\(meta)\"\(name)\":\(tensorEntry("F32", [values.count], 0, values.count * 4))}"
        return craftSafetensors(header: json, data: values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
    }

    static func index(_ weightMap: String) -> [UInt8] {
        Array("{\"metadata\":{\"total_size\":8},\"weight_map\":\(weightMap)}".utf8)
    }

    /// Headers that break one rule of `SafeTensorsError` each.
    public static let invalidSafetensors: [CraftedInput] = [
        file("empty_file", []),
        file("seven_bytes", [1, 2, 3, 4, 5, 6, 7]),
        header("header_length_over_limit", "{}", length: 100_000_001),
        header("header_length_u64_max", "{}", length: UInt64.max),
        header("header_past_end_of_file", "{}", length: 100),
        header("header_one_past_end_of_file", "{}  ", length: 5),
        file("header_invalid_utf8_byte", craftSafetensors(headerBytes: Array("{\"a".utf8) + [0xFF] + Array("\":1}".utf8))),
        file("header_utf8_surrogate", craftSafetensors(headerBytes: Array("{\"".utf8) + [0xED, 0xA0, 0x80] + Array("\":1}".utf8))),
        file("header_overlong_utf8", craftSafetensors(headerBytes: Array("{\"".utf8) + [0xC0, 0xAF] + Array("\":1}".utf8))),
        header("json_empty", ""),
        header("json_truncated", "{\"a\":{\"dtype\":\"F32\""),
        header("json_trailing_comma_object", "{\"a\":" + tensorEntry("U8", [1], 0, 1) + ",}", dataBytes: 1),
        header("json_trailing_comma_array", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}", dataBytes: 1),
        header("json_nan_literal", "{\"a\":{\"dtype\":\"F32\",\"shape\":[NaN],\"data_offsets\":[0,0]}}"),
        header("json_bad_escape", "{\"a\\x\":1}"),
        header("json_lone_high_surrogate", "{\"\\ud800\":1}"),
        header("json_lone_low_surrogate", "{\"\\udc00x\":1}"),
        header("json_deep_nesting", String(repeating: "[", count: 129) + String(repeating: "]", count: 129)),
        header("json_deep_nesting_objects", String(repeating: "{\"a\":", count: 129) + "1" + String(repeating: "}", count: 129)),
        header("json_control_character", "{\"a\tb\":1}"),
        header("json_leading_zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", dataBytes: 1),
        header("json_single_quotes", "{'a':1}"),
        header("json_comment", "{} // comment"),
        header("json_two_values", "{}{}"),
        header("json_byte_order_mark", "\u{FEFF}{}"),
        header("json_unquoted_key", "{a:1}"),
        header("header_is_array", "[]"),
        header("header_is_string", "\"weights\""),
        header("header_is_number", "8"),
        header("header_is_null", "null"),
        header("duplicate_tensor_name", tensor: "a", "{\"a\":\(tensorEntry("U8", [1], 0, 1)),\"a\":\(tensorEntry("U8", [1], 1, 2))}", dataBytes: 2),
        header("duplicate_metadata", tensor: "__metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}"),
        header("duplicate_metadata_key", tensor: "__metadata__.k", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"),
        header("metadata_is_array", "{\"__metadata__\":[\"format\",\"pt\"]}"),
        header("metadata_is_string", "{\"__metadata__\":\"pt\"}"),
        header("metadata_value_number", "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}"),
        header("metadata_value_null", "{\"__metadata__\":{\"format\":null}}"),
        header("metadata_value_object", "{\"__metadata__\":{\"format\":{\"a\":\"b\"}}}"),
        header("tensor_entry_is_array", tensor: "w", "{\"w\":[\"F32\",[1],[0,4]]}", dataBytes: 4),
        header("tensor_entry_is_string", tensor: "w", "{\"w\":\"F32\"}"),
        header("missing_dtype", tensor: "w", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("missing_shape", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("missing_data_offsets", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", dataBytes: 4),
        header("dtype_not_string", tensor: "w", "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("shape_not_array", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("shape_item_string", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("data_offsets_three_items", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", dataBytes: 4),
        header("data_offsets_one_item", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", dataBytes: 4),
        header("data_offsets_not_array", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0-4\"}}", dataBytes: 4),
        header("data_offsets_item_null", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,null]}}", dataBytes: 4),
        header("field_given_twice", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("float_in_shape", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("integral_float_in_shape", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("exponent_in_data_offsets", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", dataBytes: 4),
        header("unknown_dtype", tensor: "w", "{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", dataBytes: 16),
        header("lowercase_dtype", tensor: "w", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("negative_shape", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", dataBytes: 4),
        header("negative_offset", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", dataBytes: 4),
        header("offset_beyond_u64", tensor: "w", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", dataBytes: 4),
        header("shape_beyond_u64", tensor: "w", "{\"w\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,1]}}", dataBytes: 1),
        header("shape_beyond_int", tensor: "w", "{\"w\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808],\"data_offsets\":[0,1]}}", dataBytes: 1),
        header("offsets_reversed", tensor: "w", "{\"w\":\(tensorEntry("F32", [1], 8, 4))}", dataBytes: 8),
        header("offsets_hole", tensor: "b", "{\"a\":\(tensorEntry("F32", [1], 0, 4)),\"b\":\(tensorEntry("F32", [1], 8, 12))}", dataBytes: 12),
        header("offsets_overlap", tensor: "b", "{\"a\":\(tensorEntry("F32", [2], 0, 8)),\"b\":\(tensorEntry("F32", [1], 4, 8))}", dataBytes: 8),
        header("offsets_same_range", tensor: "b", "{\"a\":\(tensorEntry("F32", [1], 0, 4)),\"b\":\(tensorEntry("F32", [1], 0, 4))}", dataBytes: 4),
        header("offsets_not_starting_at_zero", tensor: "w", "{\"w\":\(tensorEntry("F32", [1], 4, 8))}", dataBytes: 8),
        header("shape_product_overflow", tensor: "w", "{\"w\":\(tensorEntry("U8", [4294967296, 4294967296], 0, 0))}"),
        header("byte_count_overflow", tensor: "w", "{\"w\":\(tensorEntry("F64", [1 << 60], 0, 0))}"),
        header("f4_odd_element_count", tensor: "w", "{\"w\":\(tensorEntry("F4", [3], 0, 2))}", dataBytes: 2),
        header("f6_one_element", tensor: "w", "{\"w\":\(tensorEntry("F6_E2M3", [1], 0, 1))}", dataBytes: 1),
        header("size_mismatch_short", tensor: "w", "{\"w\":\(tensorEntry("F32", [2], 0, 4))}", dataBytes: 4),
        header("size_mismatch_long", tensor: "w", "{\"w\":\(tensorEntry("F16", [2], 0, 8))}", dataBytes: 8),
        header("data_beyond_end_of_file", "{\"w\":\(tensorEntry("F32", [2], 0, 8))}", dataBytes: 4),
        header("data_beyond_end_huge_tensor", "{\"w\":\(tensorEntry("U8", [Int.max / 8], 0, Int.max / 8))}"),
        // 16 tensors of 2^60 - 1 bytes: their end fits in u64, the file position of that end does not.
        header("data_end_overflows_u64", "{" + (0..<UInt64(16)).map { "\"t\($0)\":{\"dtype\":\"U8\",\"shape\":[\(Int.max / 8)],\"data_offsets\":[\($0 * UInt64(Int.max / 8)),\(($0 + 1) * UInt64(Int.max / 8))]}" }.joined(separator: ",") + "}"),
        header("trailing_bytes", "{\"w\":\(tensorEntry("F32", [2], 0, 8))}", dataBytes: 12),
        header("trailing_bytes_after_empty_header", "{}", dataBytes: 1),
    ]

    /// Model folders that break one rule of `CheckpointError` each, plus a
    /// folder whose shard is itself invalid.
    public static let invalidModelFolders: [CraftedInput] = {
        let a = validF32("a", [1, 2])
        let b = validF32("b", [3, 4])
        let shard1 = "model-00001-of-00002.safetensors"
        let shard2 = "model-00002-of-00002.safetensors"
        let indexName = "model.safetensors.index.json"
        func sharded(_ name: String, tensor: String? = nil, _ weightMap: String, _ shards: [(String, [UInt8])]) -> CraftedInput {
            folder(name, tensor: tensor, [(indexName, index(weightMap))] + shards)
        }
        let both = [(shard1, a), (shard2, b)]
        return [
            folder("index_not_json", [(indexName, Array("{\"weight_map\": {".utf8)), (shard1, a)]),
            folder("index_is_array", [(indexName, Array("[]".utf8)), (shard1, a)]),
            folder("index_without_weight_map", [(indexName, Array("{\"metadata\":{}}".utf8)), (shard1, a)]),
            sharded("weight_map_not_object", "[\"a\"]", both),
            sharded("weight_map_value_not_string", tensor: "a", "{\"a\":1}", both),
            sharded("shard_name_with_slash", tensor: "a", "{\"a\":\"../\(shard1)\"}", both),
            sharded("shard_name_in_subfolder", tensor: "a", "{\"a\":\"sub/\(shard1)\"}", both + [("sub/" + shard1, a)]),
            sharded("shard_name_dot_dot", tensor: "a", "{\"a\":\"..\"}", both),
            sharded("shard_name_empty", tensor: "a", "{\"a\":\"\"}", both),
            sharded("listed_shard_missing", "{\"a\":\"\(shard1)\",\"b\":\"model-00003-of-00003.safetensors\"}", both),
            sharded("tensor_listed_but_absent", tensor: "c", "{\"a\":\"\(shard1)\",\"b\":\"\(shard2)\",\"c\":\"\(shard2)\"}", both),
            sharded("tensor_present_but_unlisted", tensor: "b", "{\"a\":\"\(shard1)\",\"c\":\"\(shard2)\"}",
                    [(shard1, a), (shard2, craftSafetensors(header: "{\"b\":\(tensorEntry("U8", [1], 0, 1)),\"c\":\(tensorEntry("U8", [1], 1, 2))}", data: [1, 2]))]),
            sharded("tensor_in_two_shard_headers", tensor: "a", "{\"a\":\"\(shard1)\",\"b\":\"\(shard2)\"}",
                    [(shard1, a), (shard2, craftSafetensors(header: "{\"a\":\(tensorEntry("U8", [1], 0, 1)),\"b\":\(tensorEntry("U8", [1], 1, 2))}", data: [1, 2]))]),
            sharded("tensor_twice_in_weight_map", tensor: "a", "{\"a\":\"\(shard1)\",\"b\":\"\(shard2)\",\"a\":\"\(shard2)\"}", both),
            sharded("tensor_in_wrong_shard", tensor: "b", "{\"a\":\"\(shard1)\",\"b\":\"\(shard1)\",\"c\":\"\(shard2)\"}",
                    [(shard1, a), (shard2, craftSafetensors(header: "{\"b\":\(tensorEntry("U8", [1], 0, 1)),\"c\":\(tensorEntry("U8", [1], 1, 2))}", data: [1, 2]))]),
            sharded("invalid_shard", tensor: "b", "{\"a\":\"\(shard1)\",\"b\":\"\(shard2)\"}",
                    [(shard1, a), (shard2, craftSafetensors(header: "{\"b\":\(tensorEntry("F32", [2], 0, 4))}", data: [0, 0, 0, 0]))]),
            folder("folder_without_weights", [("config.json", Array("{}".utf8))]),
            folder("empty_folder", [("sub/config.json", Array("{}".utf8))]),
            folder("two_files_without_index", [("a.safetensors", a), ("b.safetensors", b), ("config.json", Array("{}".utf8))]),
            folder("invalid_single_model_file", tensor: "w", [("model.safetensors", craftSafetensors(header: "{\"w\":\(tensorEntry("F32", [1], 4, 8))}", data: [UInt8](repeating: 0, count: 8)))]),
        ]
    }()

    /// Inputs every reader must accept.
    public static let valid: [CraftedInput] = {
        var cases: [CraftedInput] = [
            header("empty_header", "{}"),
            header("padded_header", "{}      "),
            header("whitespace_around_header", " \n\t{ } \r\n"),
            header("null_metadata", "{\"__metadata__\":null}"),
            header("metadata_only", "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\\u00e9\\ud83d\\ude00\"}}"),
            header("metadata_last", "{\"w\":\(tensorEntry("U8", [2], 0, 2)),\"__metadata__\":{\"format\":\"pt\"}}", dataBytes: 2),
            header("zero_size_tensors", "{\"e\":\(tensorEntry("F32", [0], 0, 0)),\"f\":\(tensorEntry("F16", [3, 0, 5], 0, 0)),\"g\":\(tensorEntry("BF16", [2], 0, 4)),\"h\":\(tensorEntry("U8", [0, Int.max], 4, 4))}", dataBytes: 4),
            header("scalars", "{\"s\":\(tensorEntry("F32", [], 0, 4)),\"t\":\(tensorEntry("I64", [], 4, 12)),\"u\":\(tensorEntry("BOOL", [], 12, 13))}", dataBytes: 13),
            header("offsets_out_of_header_order", "{\"late\":\(tensorEntry("U8", [3], 5, 8)),\"early\":\(tensorEntry("U8", [5], 0, 5))}", dataBytes: 8),
            header("negative_zero_offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-0,1]}}", dataBytes: 1),
            header("unicode_names", "{\"caf\\u00e9\":\(tensorEntry("U8", [1], 0, 1)),\"😀\":\(tensorEntry("U8", [1], 1, 2))}", dataBytes: 2),
        ]
        // Every dtype of the format, with an element count that is a whole number of bytes.
        let dtypes: [(String, Int)] = [
            ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("BOOL", 8), ("U8", 8), ("I8", 8), ("F8_E5M2", 8), ("F8_E4M3", 8),
            ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8), ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
            ("I32", 32), ("U32", 32), ("F32", 32), ("I64", 64), ("U64", 64), ("F64", 64), ("C64", 64),
        ]
        var entries: [String] = []
        var offset = 0
        for (dtype, bits) in dtypes {
            let shape = [2, 4]  // 8 elements: a whole number of bytes for every width
            let bytes = 8 * bits / 8
            entries.append("\"\(dtype.lowercased())_tensor\":\(tensorEntry(dtype, shape, offset, offset + bytes))")
            offset += bytes
        }
        cases.append(header("every_dtype", "{\"__metadata__\":{\"format\":\"pt\"}," + entries.joined(separator: ",") + "}", dataBytes: offset, padded: true))
        return cases
    }()

    /// The names and bit widths of every dtype in FACTS.md.
    public static let factsDTypes: [(name: String, bits: Int)] = [
        ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("BOOL", 8), ("U8", 8), ("I8", 8), ("F8_E5M2", 8), ("F8_E4M3", 8),
        ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8), ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
        ("I32", 32), ("U32", 32), ("F32", 32), ("I64", 64), ("U64", 64), ("F64", 64), ("C64", 64),
    ]
}

/// A small deterministic generator (SplitMix64) for repeatable mutations.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Deterministic corruptions of `original`: flipped bytes, truncations,
/// rewritten header lengths, inserted and deleted bytes.
public func mutations(of original: [UInt8], count: Int, seed: UInt64) -> [[UInt8]] {
    var rng = SplitMix64(seed: seed)
    let headerEnd = 8 + Int(original.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
    var results: [[UInt8]] = []
    for i in 0..<count {
        var bytes = original
        switch i % 6 {
        case 0:  // flip a few bits, mostly in the header where the rules live
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let position = Int.random(in: 0..<(Bool.random(using: &rng) ? headerEnd : bytes.count), using: &rng)
                bytes[position] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            }
        case 1:  // overwrite a header byte with a JSON-significant character
            let specials = Array("{}[]\":,0123456789-.eE \\u".utf8) + [0x00, 0x7F, 0xC3, 0xFF]
            let position = Int.random(in: 8..<headerEnd, using: &rng)
            bytes[position] = specials.randomElement(using: &rng)!
        case 2:  // truncate
            bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
        case 3:  // rewrite the header length: near the true one, or anything
            let length: UInt64 = Bool.random(using: &rng)
                ? UInt64(max(0, headerEnd - 8 + Int.random(in: -16...16, using: &rng)))
                : rng.next() >> UInt64.random(in: 0...63, using: &rng)
            withUnsafeBytes(of: length.littleEndian) { for k in 0..<8 { bytes[k] = $0[k] } }
        case 4:  // insert bytes
            let position = Int.random(in: 0...bytes.count, using: &rng)
            bytes.insert(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: position)
        default:  // delete a run of bytes
            let position = Int.random(in: 0..<bytes.count, using: &rng)
            bytes.removeSubrange(position..<min(bytes.count, position + Int.random(in: 1...6, using: &rng)))
        }
        results.append(bytes)
    }
    return results
}

/// Edits a qconv container on disk through its JSON header, keeping every
/// checksum valid, so that a crafted container breaks exactly the rule under
/// test. The header is rewritten compactly into its reserved length (the
/// writer's indented header leaves room). QConvTestSupport does not link
/// QConvKit, so the caller passes the checksum function (`XXHash64.hash`).
public struct ContainerEditor {
    public let path: String
    public let hash: ([UInt8]) -> UInt64

    public init(path: String, hash: @escaping ([UInt8]) -> UInt64) {
        self.path = path
        self.hash = hash
    }

    private func read() throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    private func write(_ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    private static func headerLength(_ bytes: [UInt8]) -> Int {
        Int(bytes[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// The header as Foundation objects.
    public func header() throws -> [String: Any] {
        let bytes = try read()
        let length = Self.headerLength(bytes)
        return try JSONSerialization.jsonObject(with: Data(bytes[32..<(32 + length)])) as! [String: Any]
    }

    /// Where the data section starts in the file.
    public func dataStart() throws -> Int { 32 + Self.headerLength(try read()) }

    /// Rewrites the header in place with a valid checksum. `["__raw__": text]` writes `text` verbatim.
    public func rewriteHeader(_ change: (inout [String: Any]) -> Void) throws {
        var bytes = try read()
        try rewriteHeader(in: &bytes, change)
        try write(bytes)
    }

    private func rewriteHeader(in bytes: inout [UInt8], _ change: (inout [String: Any]) -> Void) throws {
        let length = Self.headerLength(bytes)
        var header = try JSONSerialization.jsonObject(with: Data(bytes[32..<(32 + length)])) as! [String: Any]
        change(&header)
        var json: [UInt8]
        if let raw = header["__raw__"] as? String { json = Array(raw.utf8) } else { json = [UInt8](try JSONSerialization.data(withJSONObject: header)) }
        precondition(json.count <= length, "crafted header longer than the original")
        json += [UInt8](repeating: 0x20, count: length - json.count)
        bytes.replaceSubrange(32..<(32 + length), with: json)
        let checksum = hash(json)
        bytes.replaceSubrange(24..<32, with: (0..<8).map { UInt8(truncatingIfNeeded: checksum >> (8 * $0)) })
    }

    /// Changes the bytes of a tensor's part (or, with `tensor` nil, of the
    /// embedded file named `part`) without changing its length, and records
    /// their new checksum.
    public func changePart(tensor: String?, part: String, _ change: (inout [UInt8]) -> Void) throws {
        var bytes = try read()
        let dataStart = 32 + Self.headerLength(bytes)
        var data = Array(bytes[dataStart...])
        try rewriteHeader(in: &bytes) { header in
            func edit(_ entry: inout [String: Any]) {
                let offset = entry["offset"] as! Int, length = entry["length"] as! Int
                var content = Array(data[offset..<(offset + length)])
                change(&content)
                precondition(content.count == length, "changePart must keep the length")
                data.replaceSubrange(offset..<(offset + length), with: content)
                let digits = String(hash(content), radix: 16)
                entry["xxh64"] = String(repeating: "0", count: 16 - digits.count) + digits
            }
            if let tensor {
                var tensors = header["tensors"] as! [[String: Any]]
                let t = tensors.firstIndex { $0["name"] as? String == tensor }!
                var parts = tensors[t]["parts"] as! [[String: Any]]
                let p = parts.firstIndex { $0["name"] as? String == part }!
                edit(&parts[p])
                tensors[t]["parts"] = parts
                header["tensors"] = tensors
            } else {
                var files = header["files"] as! [[String: Any]]
                let f = files.firstIndex { $0["name"] as? String == part }!
                edit(&files[f])
                header["files"] = files
            }
        }
        bytes.replaceSubrange(dataStart..., with: data)
        try write(bytes)
    }

    /// Inserts `count` zero bytes in front of tensor `name`'s first part and
    /// moves that part and every later region by `count`.
    public func insertGap(beforeTensor name: String, count: Int) throws {
        var bytes = try read()
        let dataStart = 32 + Self.headerLength(bytes)
        var insertAt = 0
        try rewriteHeader(in: &bytes) { header in
            var tensors = header["tensors"] as! [[String: Any]]
            let first = tensors.firstIndex { $0["name"] as? String == name }!
            insertAt = dataStart + ((tensors[first]["parts"] as! [[String: Any]])[0]["offset"] as! Int)
            for t in first..<tensors.count {
                tensors[t]["parts"] = (tensors[t]["parts"] as! [[String: Any]]).map { part in
                    var part = part
                    part["offset"] = (part["offset"] as! Int) + count
                    return part
                }
            }
            header["tensors"] = tensors
        }
        bytes.insert(contentsOf: [UInt8](repeating: 0, count: count), at: insertAt)
        try write(bytes)
    }
}
