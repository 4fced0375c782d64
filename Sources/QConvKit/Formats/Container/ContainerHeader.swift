/// The JSON header of a container: what every tensor is, how it is stored and
/// where its parts are, plus embedded files and provenance.
public struct ContainerHeader: Sendable {
    /// A tensor as stored: the source tensor's name, dtype and shape, its
    /// scheme, and its parts in file order.
    public struct Tensor: Sendable {
        public var info: TensorInfo
        public var scheme: TensorScheme
        /// The parts `scheme.parts(for: info)` lists, in that order.
        public var parts: [ContainerPart]

        public init(info: TensorInfo, scheme: TensorScheme, parts: [ContainerPart]) {
            self.info = info
            self.scheme = scheme
            self.parts = parts
        }

        public var name: String { info.name }

        public func part(_ name: PartName) -> ContainerPart? { parts.first { $0.name == name } }

        /// Bytes stored for this tensor (all parts, without padding).
        public var storedBytes: UInt64 { parts.reduce(0) { $0 + $1.length } }
    }

    /// The source checkpoint's `__metadata__`, restored by `dequant`.
    public var metadata: [(key: String, value: String)]?
    /// Files of the source model folder carried along (config.json, tokenizer files).
    public var files: [EmbeddedFile]
    public var tensors: [Tensor]
    /// The qconv version and options that wrote the container, free-form.
    public var provenance: JSONObject

    public init(metadata: [(key: String, value: String)]?, files: [EmbeddedFile], tensors: [Tensor], provenance: JSONObject) {
        self.metadata = metadata
        self.files = files
        self.tensors = tensors
        self.provenance = provenance
    }

    // MARK: - Writing

    /// The header as JSON text (indented, so `head -c` shows it readably).
    public func serialized() -> [UInt8] {
        var bytes: [UInt8] = []
        serialize { bytes += $0 }
        return bytes
    }

    /// The length of `serialized()`, without keeping the text.
    public var serializedLength: Int {
        var count = 0
        serialize { count += $0.count }
        return count
    }

    /// The header's JSON text in pieces, in order. The tensors (the bulk of a
    /// header: 100,000 of them in a large model) come one at a time, written
    /// as the indented writer writes the root's last member, so that the
    /// whole text never needs to be in memory, nor a tree of it.
    public func serialize(_ piece: ([UInt8]) throws -> Void) rethrows {
        var root = JSONObject()
        root.append("format", "qconv-container")
        root.append("version", .uint(UInt64(ContainerFormat.version)))
        for (key, value) in provenance.members { root.append(key, value) }
        if let metadata {
            root.append("metadata", .object(JSONObject(metadata.map { ($0.key, JSONValue.string($0.value)) })))
        } else {
            root.append("metadata", .null)
        }
        root.append("files", .array(files.map { file in
            .object(["name": .string(file.name), "offset": .uint(file.offset), "length": .uint(file.length),
                     "xxh64": .string(ContainerFormat.hexString(file.checksum))])
        }))
        guard !tensors.isEmpty else {
            root.append("tensors", .array([]))
            return try piece(Array(JSONWriter.serialize(.object(root), style: .indented).utf8))
        }
        var text = JSONWriter.serialize(.object(root), style: .indented)
        text.removeLast(2)  // the root's closing "\n}"
        try piece(Array((text + ",\n  \"tensors\": [").utf8))
        for (i, tensor) in tensors.enumerated() {
            try piece(Array(((i > 0 ? "," : "") + "\n    " + JSONWriter.serialize(Self.json(for: tensor), style: .indented, level: 2)).utf8))
        }
        try piece(Array("\n  ]\n}".utf8))
    }

    private static func json(for tensor: Tensor) -> JSONValue {
        var object = JSONObject()
        object.append("name", .string(tensor.info.name))
        object.append("dtype", .string(tensor.info.dtype.rawValue))
        object.append("shape", .array(tensor.info.shape.map { .int($0) }))
        object.append("scheme", .string(tensor.scheme.name))
        object.append("params", .object(params(of: tensor.scheme)))
        object.append("parts", .array(tensor.parts.map { part in
            .object([
                "name": .string(part.name.rawValue), "dtype": .string(part.layout.dtype.rawValue),
                "shape": .array(part.layout.shape.map { .int($0) }),
                "offset": .uint(part.offset), "length": .uint(part.length), "xxh64": .string(ContainerFormat.hexString(part.checksum)),
            ])
        }))
        return .object(object)
    }

    /// A scheme's `params` object (docs/FORMAT.md).
    private static func params(of scheme: TensorScheme) -> JSONObject {
        var params = JSONObject()
        switch scheme {
        case .raw:
            break
        case .strided, .scaledFP8:
            preconditionFailure("a container never holds a strided view or FP8 weights (copies write them raw)")
        case .fourBit(let p):
            params.append("block_size", .int(p.blockSize))
            switch p.blockScales {
            case .float32:
                params.append("double_quant", .bool(false))
            case .doubleQuantized(let offset):
                params.append("double_quant", .bool(true))
                params.append("nested_block_size", .int(DoubleQuantization.nestedBlockSize))
                params.append("offset", .float(offset))
                params.append("offset_bits", .string(ContainerFormat.hexString(offset.bitPattern)))
            }
        case .int8(let p):
            params.append("outlier_column_count", .int(p.outlierColumnCount))
            params.append("outlier_rule", .string(p.outlierRule.description))
            params.append("outlier_threshold", p.outlierThreshold.map { .double($0) } ?? .null)
        }
        return params
    }

    // MARK: - Reading

    /// Parses and validates header JSON; `file` names the container in errors.
    /// Layout rules that need the file size are checked by `ContainerFile`.
    public static func parse(_ bytes: [UInt8], file: String) throws -> ContainerHeader {
        guard String(validating: bytes, as: UTF8.self) != nil else { throw ContainerError.headerNotUTF8(file: file) }
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch let error as JSONParseError {
            throw ContainerError.headerNotJSON(file: file, reason: error.description)
        }
        let reader = FieldReader(file: file, tensor: "")
        let object = try reader.object(root, "header")
        guard object["format"]?.stringValue == "qconv-container" else {
            throw ContainerError.invalidField(file: file, tensor: "", field: "format", expected: "\"qconv-container\"")
        }
        let version = object["version"] ?? .null
        guard version.numberValue?.uint64Value == UInt64(ContainerFormat.version) else {
            let text = JSONWriter.serialize(version)
            throw ContainerError.headerVersionMismatch(file: file, found: text.count <= 40 ? text : version.kindDescription)
        }
        var metadata: [(key: String, value: String)]?
        if let value = object["metadata"], value != .null {
            metadata = try reader.object(value, "metadata").members.map { key, value in
                (key, try reader.string(value, "metadata.\(key)"))
            }
        }
        var fileNames = Set<String>()
        let files = try reader.array(object["files"] ?? .array([]), "files").map { value -> EmbeddedFile in
            let entry = try reader.object(value, "files[]")
            let name = try reader.string(entry["name"], "files[].name")
            if let problem = ContainerFormat.embeddedFileNameProblem(name) {
                throw ContainerError.unsafeEmbeddedFileName(file: file, name: name, reason: problem)
            }
            guard fileNames.insert(name).inserted else { throw ContainerError.duplicateEmbeddedFileName(file: file, name: name) }
            let length = try reader.unsigned(entry["length"], "files[].length")
            // Lengths beyond 2^56 cannot fit any file and would overflow byte counts.
            guard length < 1 << 56 else { throw ContainerError.invalidField(file: file, tensor: "", field: "files[].length", expected: "below 2^56") }
            return EmbeddedFile(name: name, region: ContainerRegion(offset: try reader.unsigned(entry["offset"], "files[].offset"), length: length,
                                                                    checksum: try reader.checksum(entry["xxh64"], "files[].xxh64")))
        }
        for name in fileNames.sorted() {
            let components = name.split(separator: "/")
            for depth in 1..<max(1, components.count) where fileNames.contains(components[0..<depth].joined(separator: "/")) {
                throw ContainerError.embeddedFileIsAlsoAFolder(file: file, name: components[0..<depth].joined(separator: "/"))
            }
        }
        var names = Set<String>()
        let tensors = try reader.array(object["tensors"], "tensors").map { value -> Tensor in
            let tensor = try parseTensor(value, file: file)
            guard names.insert(tensor.name).inserted else { throw ContainerError.duplicateTensorName(file: file, tensor: tensor.name) }
            return tensor
        }
        var provenance = JSONObject()
        for member in object.members where !["format", "version", "metadata", "files", "tensors"].contains(member.key) {
            provenance.append(member.key, member.value)
        }
        return ContainerHeader(metadata: metadata, files: files, tensors: tensors, provenance: provenance)
    }

    private static func parseTensor(_ value: JSONValue, file: String) throws -> Tensor {
        let unnamed = FieldReader(file: file, tensor: "")
        let object = try unnamed.object(value, "tensors[]")
        let name = try unnamed.string(object["name"], "tensors[].name")
        let reader = FieldReader(file: file, tensor: name)
        let dtypeName = try reader.string(object["dtype"], "dtype")
        guard let dtype = DType(rawValue: dtypeName) else { throw ContainerError.unknownDType(file: file, tensor: name, dtype: dtypeName) }
        let info = TensorInfo(name: name, dtype: dtype, shape: try reader.shape(object["shape"], "shape"))
        let schemeName = try reader.string(object["scheme"], "scheme")
        guard TensorScheme.names.contains(schemeName) else { throw ContainerError.unknownScheme(file: file, tensor: name, scheme: schemeName) }
        let params = try reader.object(object["params"] ?? .object(JSONObject()), "params")
        let scheme = try parseScheme(schemeName, params: params, info: info, reader: reader)
        let expected = scheme.parts(for: info)
        let parts = try reader.array(object["parts"], "parts").map { value -> (name: String, dtype: DType, shape: [Int], region: ContainerRegion) in
            let entry = try reader.object(value, "parts[]")
            let partName = try reader.string(entry["name"], "parts[].name")
            let partDType = try reader.string(entry["dtype"], "parts[].dtype")
            guard let dtype = DType(rawValue: partDType) else { throw ContainerError.unknownDType(file: file, tensor: name, dtype: partDType) }
            return (partName, dtype, try reader.shape(entry["shape"], "parts[].shape"),
                    ContainerRegion(offset: try reader.unsigned(entry["offset"], "parts[].offset"),
                                    length: try reader.unsigned(entry["length"], "parts[].length"),
                                    checksum: try reader.checksum(entry["xxh64"], "parts[].xxh64")))
        }
        guard parts.map(\.name) == expected.map(\.name.rawValue),
              zip(parts, expected).allSatisfy({ $0.dtype == $1.dtype && $0.shape == $1.shape }) else {
            throw ContainerError.wrongParts(file: file, tensor: name, expected: expected.map { "\($0.name.rawValue) \($0.dtype.rawValue) \($0.shape)" },
                                            found: parts.map { "\($0.name) \($0.dtype.rawValue) \($0.shape)" })
        }
        for (part, layout) in zip(parts, expected) where part.region.length != layout.byteCount {
            throw ContainerError.partSizeMismatch(file: file, tensor: name, part: part.name, expected: layout.byteCount, actual: part.region.length)
        }
        return Tensor(info: info, scheme: scheme, parts: zip(expected, parts).map { ContainerPart(layout: $0, region: $1.region) })
    }

    /// A tensor's scheme from its `scheme` name and `params`.
    private static func parseScheme(_ schemeName: String, params: JSONObject, info: TensorInfo, reader: FieldReader) throws -> TensorScheme {
        let (file, name) = (reader.file, info.name)
        func requireFloat() throws {
            guard info.dtype.isDecodableToFloat else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "dtype",
                                                      reason: "must be a float dtype for \(schemeName), found \(info.dtype.rawValue)")
            }
        }
        switch schemeName {
        case "raw":
            return .raw
        case FourBitFormat.nf4.rawValue, FourBitFormat.fp4.rawValue:
            try requireFloat()
            let blockSize = Int(clamping: try reader.unsigned(params["block_size"], "params.block_size"))
            guard Blockwise4Bit.supportedBlockSizes.contains(blockSize) else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "block_size",
                                                      reason: "must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", ")), found \(blockSize)")
            }
            let scales: BlockScales = try reader.bool(params["double_quant"], "params.double_quant") ? try parseOffset(params, reader: reader) : .float32
            return .fourBit(FourBitParameters(format: FourBitFormat(rawValue: schemeName)!, blockSize: blockSize, blockScales: scales))
        case "int8":
            try requireFloat()
            let k = Int(clamping: try reader.unsigned(params["outlier_column_count"], "params.outlier_column_count"))
            guard k <= info.matrixShape.columns else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "outlier_column_count", reason: "is \(k), more than the \(info.matrixShape.columns) columns")
            }
            let ruleText = try reader.string(params["outlier_rule"], "params.outlier_rule")
            guard let rule = OutlierCriterion(argument: ruleText) else { throw ContainerError.unknownOutlierRule(file: file, tensor: name, rule: ruleText) }
            let threshold = try reader.numberOrNull(params["outlier_threshold"], "params.outlier_threshold")
            return .int8(Int8Parameters(outlierRule: rule, outlierColumnCount: k, outlierThreshold: threshold))
        default:
            throw ContainerError.unknownScheme(file: file, tensor: name, scheme: schemeName)
        }
    }

    /// The double-quantization parameters: `nested_block_size` 256, and the offset from `offset_bits`.
    private static func parseOffset(_ params: JSONObject, reader: FieldReader) throws -> BlockScales {
        let (file, name) = (reader.file, reader.tensor)
        let nestedBlockSize = try reader.unsigned(params["nested_block_size"], "params.nested_block_size")
        guard nestedBlockSize == UInt64(DoubleQuantization.nestedBlockSize) else {
            throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "nested_block_size",
                                                  reason: "must be \(DoubleQuantization.nestedBlockSize), found \(nestedBlockSize)")
        }
        // The decimal is for people (null when not finite); offset_bits is the value.
        try reader.numberOrNull(params["offset"], "params.offset")
        let bitsText = try reader.string(params["offset_bits"], "params.offset_bits")
        guard let bits = ContainerFormat.parseHex(bitsText, as: UInt32.self) else {
            throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "offset_bits", reason: "must be 8 lower-case hex digits, found '\(bitsText)'")
        }
        return .doubleQuantized(offset: Float(bitPattern: bits))
    }
}

/// Reads typed fields out of header JSON, turning every mismatch into a
/// `ContainerError.invalidField` that names the tensor and the field.
private struct FieldReader {
    let file: String
    let tensor: String

    func fail(_ field: String, _ expected: String) -> ContainerError {
        .invalidField(file: file, tensor: tensor, field: field, expected: expected)
    }

    func object(_ value: JSONValue?, _ field: String) throws -> JSONObject {
        guard let object = value?.objectValue else { throw fail(field, "an object") }
        return object
    }

    func array(_ value: JSONValue?, _ field: String) throws -> [JSONValue] {
        guard let array = value?.arrayValue else { throw fail(field, "an array") }
        return array
    }

    func string(_ value: JSONValue?, _ field: String) throws -> String {
        guard let string = value?.stringValue else { throw fail(field, "a string") }
        return string
    }

    func unsigned(_ value: JSONValue?, _ field: String) throws -> UInt64 {
        guard let number = value?.numberValue?.uint64Value else { throw fail(field, "an integer in 0...2^64-1") }
        return number
    }

    func bool(_ value: JSONValue?, _ field: String) throws -> Bool {
        guard let bool = value?.boolValue else { throw fail(field, "true or false") }
        return bool
    }

    /// A number, or null; present either way.
    @discardableResult
    func numberOrNull(_ value: JSONValue?, _ field: String) throws -> Double? {
        if value == .null { return nil }
        guard let number = value?.numberValue?.doubleValue else { throw fail(field, "a number or null") }
        return number
    }

    func checksum(_ value: JSONValue?, _ field: String) throws -> UInt64 {
        guard let text = value?.stringValue, let number = ContainerFormat.parseHex(text, as: UInt64.self) else {
            throw fail(field, "16 lower-case hex digits")
        }
        return number
    }

    /// A shape whose element count and byte counts cannot overflow.
    func shape(_ value: JSONValue?, _ field: String) throws -> [Int] {
        var elements: UInt64 = 1
        return try array(value, field).map { item in
            let dimension = try unsigned(item, field)
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            // 2^56 elements keeps every byte count (up to 8 bytes each) inside Int.
            guard !overflow, product < 1 << 56 else {
                throw ContainerError.invalidShape(file: file, tensor: tensor, reason: "\(field) element count overflows")
            }
            elements = product
            return Int(dimension)
        }
    }
}
