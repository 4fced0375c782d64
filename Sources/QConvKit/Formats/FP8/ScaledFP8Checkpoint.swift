/// FP8 checkpoints (FACTS.md, "FP8 checkpoints"), recognized in any model a
/// reader opened: each `F8_E4M3`/`F8_E5M2` tensor `P` with a float scale
/// tensor `P_scale_inv` (DeepSeek-V3's block scales) or `P_scale`
/// (compressed-tensors' per-channel or per-tensor scales) becomes one
/// logical tensor of scheme `.scaledFP8`, whose values are the scaled ones
/// and whose dtype is the model's (`torch_dtype` of config.json, BF16
/// without one). The scale tensors are no longer tensors of the model, and
/// config.json loses its `quantization_config`: whatever qconv writes from
/// such a model holds no FP8.
public enum ScaledFP8Checkpoint {
    /// The names a scale tensor takes after its weight's.
    public static let scaleSuffixes = ["_scale_inv", "_scale"]
    /// The block size when config.json does not give one.
    public static let defaultBlock = (rows: 128, columns: 128)

    /// `model` with its FP8 weights and their scales paired (itself when it has none).
    public static func pairing(_ model: Model) throws -> Model {
        guard model.format != .container, model.tensors.contains(where: { $0.info.dtype == .f8e4m3 || $0.info.dtype == .f8e5m2 }) else { return model }
        let config = try FP8Config(model)
        var paired: [String: ModelTensor] = [:]
        var scales = Set<String>()
        for weight in model.tensors where (weight.info.dtype == .f8e4m3 || weight.info.dtype == .f8e5m2) && weight.scheme == .raw {
            guard let scale = scaleSuffixes.lazy.compactMap({ model.tensor(named: weight.name + $0) }).first, scale.scheme == .raw else { continue }
            paired[weight.name] = try pair(weight, scale, config: config, file: model.path)
            scales.insert(scale.name)
        }
        guard !paired.isEmpty else { return model }
        let tensors = model.tensors.filter { !scales.contains($0.name) }.map { paired[$0.name] ?? $0 }
        var counts = [Int](repeating: 0, count: model.files.count)
        for tensor in tensors { counts[tensor.file] += 1 }
        let files = model.files.enumerated().map { ModelFile(name: $1.name, path: $1.path, size: $1.size, tensorCount: counts[$0]) }
        let sideFiles = model.sideFiles.map { $0.name == TransformersConfig.fileName ? config.withoutQuantization(of: $0) : $0 }
        return model.replacing(files: files, sideFiles: sideFiles, tensors: tensors)
    }

    /// The weight and its scale as one tensor, after checking that the scale fits it.
    private static func pair(_ weight: ModelTensor, _ scale: ModelTensor, config: FP8Config, file: String) throws -> ModelTensor {
        let shape = weight.info.shape, scaleShape = scale.info.shape
        guard scale.info.dtype.isDecodableToFloat, scale.info.dtype.byteWidth ?? 0 >= 2 else {
            throw ScaledFP8Error.scaleNotFloat(file: file, tensor: weight.name, scale: scale.name, dtype: scale.info.dtype.rawValue)
        }
        let granularity: ScaledFP8Parameters.Granularity
        let block = config.block ?? defaultBlock
        if shape.count == 2 && scaleShape == [divideRoundingUp(shape[0], block.rows), divideRoundingUp(shape[1], block.columns)] {
            granularity = .block(rows: block.rows, columns: block.columns)
        } else if shape.count == 2 && (scaleShape == [shape[0], 1] || scaleShape == [shape[0]]) {
            granularity = .channel
        } else if scale.info.elementCount == 1 {
            granularity = .tensor
        } else {
            let expected = shape.count == 2
                ? "[\(shape[0]), 1] (per row), [\(divideRoundingUp(shape[0], block.rows)), \(divideRoundingUp(shape[1], block.columns))] (blocks of \(block.rows)x\(block.columns)) or one value"
                : "one value (the weight is not a matrix)"
            throw ScaledFP8Error.scaleShapeMismatch(file: file, tensor: weight.name, scale: scale.name, shape: scale.info.shapeDescription, expected: expected)
        }
        let parameters = ScaledFP8Parameters(granularity: granularity, valuesDType: weight.info.dtype, scaleDType: scale.info.dtype,
                                             scaleShape: scaleShape, scaleName: scale.name)
        let scheme = TensorScheme.scaledFP8(parameters)
        let info = TensorInfo(name: weight.name, dtype: config.dtype, shape: shape)
        let layouts = scheme.parts(for: info)
        return ModelTensor(info: info, scheme: scheme, parts: [StoredPart(layout: layouts[0], bytes: weight.parts[0].bytes),
                                                                StoredPart(layout: layouts[1], bytes: scale.parts[0].bytes)], file: weight.file)
    }
}

/// What config.json says about an FP8 model: its dtype, the block size of its scales.
struct FP8Config {
    /// The dtype the model computes in (`torch_dtype` or `dtype`): what its weights decode to.
    let dtype: DType
    /// `weight_block_size` (or compressed-tensors' `block_structure`), when given.
    let block: (rows: Int, columns: Int)?
    /// The parsed config, to write again without `quantization_config`.
    private let object: JSONObject?

    init(_ model: Model) throws {
        guard let object = TransformersConfig.object(of: model) else {
            (dtype, block, object) = (.bf16, nil, nil)
            return
        }
        self.object = object
        let name = object["torch_dtype"]?.stringValue ?? object["dtype"]?.stringValue
        dtype = name.flatMap { DType(commandLineName: $0) } ?? .bf16
        let quantization = object["quantization_config"]?.objectValue
        var blockValue = quantization?["weight_block_size"]
        for (_, group) in quantization?["config_groups"]?.objectValue?.members ?? [] where blockValue == nil {
            blockValue = group.objectValue?["weights"]?.objectValue?["block_structure"]
        }
        switch blockValue {
        case nil, .null?:
            block = nil
        case .array(let items)? where items.count == 2:
            guard let rows = items[0].numberValue?.intValue, let columns = items[1].numberValue?.intValue, rows > 0, columns > 0 else { fallthrough }
            block = (rows, columns)
        default:
            throw ScaledFP8Error.invalidBlockSize(file: FileSystem.join(model.path, TransformersConfig.fileName), value: JSONWriter.serialize(blockValue ?? .null))
        }
    }

    /// config.json less its `quantization_config`, written as transformers writes it.
    func withoutQuantization(of file: SideFile) -> SideFile {
        guard let object, object["quantization_config"] != nil else { return file }
        return SideFile(name: file.name, generated: TransformersConfig.withoutQuantization(object))
    }
}

/// Why an FP8 weight and its scale cannot be read as one (exit 3).
public enum ScaledFP8Error: QConvError, Equatable {
    /// The scale tensor is not a float tensor of at least 16 bits.
    case scaleNotFloat(file: String, tensor: String, scale: String, dtype: String)
    /// The scale's shape is none of the layouts FP8 checkpoints use for this weight.
    case scaleShapeMismatch(file: String, tensor: String, scale: String, shape: String, expected: String)
    /// config.json's `weight_block_size` (or `block_structure`) is not two positive integers.
    case invalidBlockSize(file: String, value: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .scaleNotFloat(file, tensor, scale, dtype):
            return "\(file): tensor '\(tensor)': its scale '\(scale)' is \(dtype), not a float tensor"
        case let .scaleShapeMismatch(file, tensor, scale, shape, expected):
            return "\(file): tensor '\(tensor)': its scale '\(scale)' has shape \(shape); expected \(expected)"
        case let .invalidBlockSize(file, value):
            return "\(file): quantization_config: the block size \(value) is not two positive integers"
        }
    }
}
