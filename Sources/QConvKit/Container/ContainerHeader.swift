/// The JSON header of a container: what every tensor is, how it is stored and
/// where its parts are, plus embedded files and provenance.
public struct ContainerHeader: Sendable {
    /// A tensor as stored: the source tensor's name, dtype and shape, the
    /// scheme and its parameters, and the parts in file order.
    public struct Tensor: Sendable {
        public var info: TensorInfo
        public var scheme: ContainerScheme
        public var parameters: SchemeParameters
        public var parts: [ContainerPart]

        public init(info: TensorInfo, scheme: ContainerScheme, parameters: SchemeParameters, parts: [ContainerPart]) {
            self.info = info
            self.scheme = scheme
            self.parameters = parameters
            self.parts = parts
        }

        public var name: String { info.name }

        public func part(_ name: String) -> ContainerPart? { parts.first { $0.name == name } }

        /// Bytes stored for this tensor (all parts, without padding).
        public var storedBytes: UInt64 { parts.reduce(0) { $0 + $1.length } }
    }

    /// The source checkpoint's `__metadata__`, restored by `dequant`.
    public var metadata: [(key: String, value: String)]?
    /// Files of the source model folder carried along (config.json, tokenizer files).
    public var files: [ContainerPart]
    public var tensors: [Tensor]
    /// The qconv version and options that wrote the container, free-form.
    public var provenance: JSONObject

    public init(metadata: [(key: String, value: String)]?, files: [ContainerPart], tensors: [Tensor], provenance: JSONObject) {
        self.metadata = metadata
        self.files = files
        self.tensors = tensors
        self.provenance = provenance
    }

    // MARK: - Writing

    /// The header as JSON text (indented, so `head -c` shows it readably).
    public func serialized() -> [UInt8] {
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
        root.append("tensors", .array(tensors.map(Self.json(for:))))
        return Array(JSONWriter.serialize(.object(root), style: .indented).utf8)
    }

    private static func json(for tensor: Tensor) -> JSONValue {
        var object = JSONObject()
        object.append("name", .string(tensor.info.name))
        object.append("dtype", .string(tensor.info.dtype.rawValue))
        object.append("shape", .array(tensor.info.shape.map { .int($0) }))
        object.append("scheme", .string(tensor.scheme.rawValue))
        var params = JSONObject()
        switch tensor.parameters {
        case .raw:
            break
        case let .fourBit(blockSize, offset):
            params.append("block_size", .int(blockSize))
            params.append("double_quant", .bool(offset != nil))
            if let offset {
                params.append("nested_block_size", .int(DoubleQuantization.nestedBlockSize))
                params.append("offset", .float(offset))
                params.append("offset_bits", .string(ContainerFormat.hexString(offset.bitPattern)))
            }
        case let .int8(k, rule, threshold):
            params.append("outlier_column_count", .int(k))
            params.append("outlier_rule", .string(rule))
            params.append("outlier_threshold", threshold.map { .double($0) } ?? .null)
        }
        object.append("params", .object(params))
        object.append("parts", .array(tensor.parts.map { part in
            .object([
                "name": .string(part.name), "dtype": .string(part.dtype.rawValue), "shape": .array(part.shape.map { .int($0) }),
                "offset": .uint(part.offset), "length": .uint(part.length), "xxh64": .string(ContainerFormat.hexString(part.checksum)),
            ])
        }))
        return .object(object)
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
        let files = try reader.array(object["files"] ?? .array([]), "files").map { value -> ContainerPart in
            let entry = try reader.object(value, "files[]")
            let name = try reader.string(entry["name"], "files[].name")
            if let problem = ContainerFormat.embeddedFileNameProblem(name) {
                throw ContainerError.unsafeEmbeddedFileName(file: file, name: name, reason: problem)
            }
            guard fileNames.insert(name).inserted else { throw ContainerError.duplicateEmbeddedFileName(file: file, name: name) }
            let length = try reader.unsigned(entry["length"], "files[].length")
            // Lengths beyond 2^56 cannot fit any file and would overflow byte counts.
            guard length < 1 << 56 else { throw ContainerError.invalidField(file: file, tensor: "", field: "files[].length", expected: "below 2^56") }
            return ContainerPart(name: name, dtype: .u8, shape: [Int(length)],
                                 offset: try reader.unsigned(entry["offset"], "files[].offset"), length: length,
                                 checksum: try reader.checksum(entry["xxh64"], "files[].xxh64"))
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
        let shape = try reader.shape(object["shape"], "shape")
        let info = TensorInfo(name: name, dtype: dtype, shape: shape)
        let schemeName = try reader.string(object["scheme"], "scheme")
        guard let scheme = ContainerScheme(rawValue: schemeName) else {
            throw ContainerError.unknownScheme(file: file, tensor: name, scheme: schemeName)
        }
        let params = try reader.object(object["params"] ?? .object(JSONObject()), "params")
        let parameters: SchemeParameters
        switch scheme {
        case .raw:
            parameters = .raw
        case .nf4, .fp4:
            guard dtype.isDecodableToFloat else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "dtype", reason: "must be a float dtype for \(scheme.rawValue), found \(dtypeName)")
            }
            let blockSize = Int(clamping: try reader.unsigned(params["block_size"], "params.block_size"))
            guard Blockwise4Bit.supportedBlockSizes.contains(blockSize) else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "block_size",
                                                      reason: "must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", ")), found \(blockSize)")
            }
            var offset: Float?
            if try reader.bool(params["double_quant"], "params.double_quant") {
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
                offset = Float(bitPattern: bits)
            }
            parameters = .fourBit(blockSize: blockSize, offset: offset)
        case .int8:
            guard dtype.isDecodableToFloat else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "dtype", reason: "must be a float dtype for int8, found \(dtypeName)")
            }
            let k = Int(clamping: try reader.unsigned(params["outlier_column_count"], "params.outlier_column_count"))
            guard k <= info.matrixShape.columns else {
                throw ContainerError.invalidParameter(file: file, tensor: name, parameter: "outlier_column_count", reason: "is \(k), more than the \(info.matrixShape.columns) columns")
            }
            let rule = try reader.string(params["outlier_rule"], "params.outlier_rule")
            _ = try outlierCriterion(rule, file: file, tensor: name)
            let threshold = try reader.numberOrNull(params["outlier_threshold"], "params.outlier_threshold")
            parameters = .int8(outlierColumnCount: k, rule: rule, threshold: threshold)
        }

        let expected = ContainerLayout.parts(for: info, scheme: scheme, parameters: parameters)
        let parts = try reader.array(object["parts"], "parts").map { value -> ContainerPart in
            let entry = try reader.object(value, "parts[]")
            let partName = try reader.string(entry["name"], "parts[].name")
            let partDType = try reader.string(entry["dtype"], "parts[].dtype")
            guard let dtype = DType(rawValue: partDType) else { throw ContainerError.unknownDType(file: file, tensor: name, dtype: partDType) }
            return ContainerPart(name: partName, dtype: dtype, shape: try reader.shape(entry["shape"], "parts[].shape"),
                                 offset: try reader.unsigned(entry["offset"], "parts[].offset"),
                                 length: try reader.unsigned(entry["length"], "parts[].length"),
                                 checksum: try reader.checksum(entry["xxh64"], "parts[].xxh64"))
        }
        guard parts.map(\.name) == expected.map(\.name),
              zip(parts, expected).allSatisfy({ $0.dtype == $1.dtype && $0.shape == $1.shape }) else {
            throw ContainerError.wrongParts(file: file, tensor: name,
                                            expected: expected.map { "\($0.name) \($0.dtype.rawValue) \($0.shape)" },
                                            found: parts.map { "\($0.name) \($0.dtype.rawValue) \($0.shape)" })
        }
        for part in parts where part.length != part.expectedLength {
            throw ContainerError.partSizeMismatch(file: file, tensor: name, part: part.name, expected: part.expectedLength, actual: part.length)
        }
        return Tensor(info: info, scheme: scheme, parameters: parameters, parts: parts)
    }

    /// The criterion an int8 tensor's `outlier_rule` names, which is how the
    /// tensor is quantized again when it changes (merge-lora into a container).
    public static func outlierCriterion(_ rule: String, file: String, tensor: String) throws -> OutlierCriterion {
        guard let criterion = OutlierCriterion(argument: rule) else {
            throw ContainerError.unknownOutlierRule(file: file, tensor: tensor, rule: rule)
        }
        return criterion
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
