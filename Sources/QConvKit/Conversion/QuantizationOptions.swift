/// How `to-nf4`, `to-fp4` and `to-int8` quantize.
public enum QuantizationMethod: Sendable {
    /// NF4 or FP4 blocks of `blockSize`, with double-quantized absmax when `doubleQuant`.
    case fourBit(FourBitFormat, blockSize: Int, doubleQuant: Bool)
    /// Row-wise int8 with outlier columns chosen by `outliers`.
    case int8(outliers: OutlierCriterion)

    public var scheme: ContainerScheme {
        switch self {
        case let .fourBit(format, _, _): return format.scheme
        case .int8: return .int8
        }
    }

    /// The command that selects this method ("to-nf4").
    public var commandName: String { "to-\(scheme.rawValue)" }
}

/// Everything a quantizing conversion needs besides its input and output.
public struct QuantizationOptions {
    public var method: QuantizationMethod
    public var selection: TensorSelection
    public var threads: Int
    /// Quantize tensors holding NaN or infinity instead of refusing them.
    public var allowNonfinite: Bool
    /// Replace an existing output (`--force`).
    public var overwrite: Bool
    /// No progress line.
    public var quiet: Bool

    public init(method: QuantizationMethod, selection: TensorSelection, threads: Int = defaultThreadCount,
                allowNonfinite: Bool = false, overwrite: Bool = false, quiet: Bool = true) {
        self.method = method
        self.selection = selection
        self.threads = threads
        self.allowNonfinite = allowNonfinite
        self.overwrite = overwrite
        self.quiet = quiet
    }

    /// The options as recorded in the container header.
    var json: JSONValue {
        var object = JSONObject()
        object.append("command", .string(method.commandName))
        switch method {
        case let .fourBit(_, blockSize, doubleQuant):
            object.append("block_size", .int(blockSize))
            object.append("double_quant", .bool(doubleQuant))
        case let .int8(outliers):
            object.append("outliers", .string(outliers.description))
        }
        object.append("selection", selection.json)
        object.append("allow_nonfinite", .bool(allowNonfinite))
        return .object(object)
    }
}
