/// The `quantization_config` transformers writes into `config.json` for a
/// bitsandbytes model, and what a reader learns from one.
public struct BitsandbytesConfig: Equatable, Sendable {
    /// What the weights are quantized to.
    public enum Mode: Equatable, Sendable {
        case fourBit(FourBitFormat, doubleQuant: Bool)
        case eightBit
    }

    public var mode: Mode
    /// `bnb_4bit_compute_dtype`: the dtype 4-bit layers compute in.
    public var computeDType: DType
    /// `llm_int8_skip_modules`: nil leaves transformers' default (it keeps
    /// `lm_head` unquantized); a list replaces it.
    public var skipModules: [String]?

    public init(mode: Mode, computeDType: DType, skipModules: [String]? = nil) {
        self.mode = mode
        self.computeDType = computeDType
        self.skipModules = skipModules
    }

    /// The object exactly as transformers 5 saves it (all 13 keys; written with sorted keys).
    public var json: JSONValue {
        var fourBit = false, format = FourBitFormat.fp4, doubleQuant = false
        if case let .fourBit(f, dq) = mode { (fourBit, format, doubleQuant) = (true, f, dq) }
        let computeName = TorchDTypeName.name(of: computeDType) ?? "float32"
        return .object([
            "_load_in_4bit": .bool(fourBit),
            "_load_in_8bit": .bool(!fourBit),
            "bnb_4bit_compute_dtype": .string(computeName),
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": .string(format.rawValue),
            "bnb_4bit_use_double_quant": .bool(doubleQuant),
            "llm_int8_enable_fp32_cpu_offload": false,
            "llm_int8_has_fp16_weight": false,
            "llm_int8_skip_modules": skipModules.map { .array($0.map { .string($0) }) } ?? .null,
            "llm_int8_threshold": .number(JSONNumber(python: 6.0)),
            "load_in_4bit": .bool(fourBit),
            "load_in_8bit": .bool(!fourBit),
            "quant_method": "bitsandbytes",
        ])
    }

    /// `source` (a config.json) with `quantization_config` set to `self`,
    /// written as transformers writes configs: Python's `json.dumps(indent=2,
    /// sort_keys=True)` and a newline.
    ///
    /// - Throws: `BitsandbytesError.configInvalid` when `source` is not a JSON object.
    public func configFile(from source: [UInt8], path: String) throws -> [UInt8] {
        var config = try Self.parseObject(source, path: path)
        config.members.removeAll { $0.key == "quantization_config" }
        config.append("quantization_config", json)
        return TransformersConfig.text(config)
    }

    /// `source` without `quantization_config` (a dequantized model's config).
    public static func configWithoutQuantization(_ source: [UInt8], path: String) throws -> [UInt8] {
        TransformersConfig.withoutQuantization(try parseObject(source, path: path))
    }

    /// A config's top-level object, which the bitsandbytes layout insists on.
    static func parseObject(_ bytes: [UInt8], path: String) throws -> JSONObject {
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch {
            throw BitsandbytesError.configInvalid(file: path, reason: "not valid JSON (\(error))")
        }
        guard let object = root.objectValue else {
            throw BitsandbytesError.configInvalid(file: path, reason: "must be a JSON object, found \(root.kindDescription)")
        }
        return object
    }
}

/// What a checkpoint's config.json says about quantization (the reader's view).
public struct BitsandbytesConfigFile: Sendable {
    public let path: String
    /// `quantization_config`, when there is one.
    public let quantization: JSONObject?
    /// The model's dtype (`dtype`, or `torch_dtype` of older transformers).
    public let modelDType: DType?

    /// Parses the config.
    ///
    /// - Throws: `BitsandbytesError.configInvalid`.
    public init(path: String, bytes: [UInt8]) throws {
        self.path = path
        let object = try BitsandbytesConfig.parseObject(bytes, path: path)
        quantization = object["quantization_config"]?.objectValue
        let dtypeName = object["dtype"]?.stringValue ?? object["torch_dtype"]?.stringValue
        modelDType = dtypeName.flatMap(TorchDTypeName.dtype(named:))
    }

    /// `quant_method` is "bitsandbytes".
    public var isBitsandbytes: Bool { quantization?["quant_method"]?.stringValue == "bitsandbytes" }

    /// A boolean member of quantization_config (`load_in_4bit` also read as `_load_in_4bit`).
    func flag(_ key: String) -> Bool? {
        quantization?[key]?.boolValue ?? quantization?["_" + key]?.boolValue
    }

    /// `bnb_4bit_quant_type` (transformers' default is "fp4").
    var quantType: String { quantization?["bnb_4bit_quant_type"]?.stringValue ?? "fp4" }
    /// `bnb_4bit_use_double_quant` (default false).
    var doubleQuant: Bool { quantization?["bnb_4bit_use_double_quant"]?.boolValue ?? false }

    /// Reads `name` from a folder when it is there and small enough to be a config.
    static func read(folder: String) -> (path: String, bytes: [UInt8])? {
        let path = FileSystem.join(folder, TransformersConfig.fileName)
        guard FileSystem.kind(of: path) == .file, let file = try? ReadableFile(path: path), file.size <= TransformersConfig.maximumSize,
              let bytes = try? file.readBytes(at: 0, count: Int(file.size)) else { return nil }
        return (path, bytes)
    }
}
