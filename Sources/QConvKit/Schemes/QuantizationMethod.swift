/// What a conversion is asked to quantize to. The `TensorScheme` a tensor
/// ends up with adds what is only known once its values are seen (the
/// double-quantization offset, the outlier columns).
public enum QuantizationMethod: Equatable, Sendable {
    /// NF4 or FP4 blocks of `blockSize`, with double-quantized absmax when `doubleQuant`.
    case fourBit(FourBitFormat, blockSize: Int, doubleQuant: Bool)
    /// Row-wise int8 with outlier columns chosen by `outliers`.
    case int8(outliers: OutlierCriterion)

    /// "nf4", "fp4" or "int8".
    public var schemeName: String {
        switch self {
        case .fourBit(let format, _, _): return format.rawValue
        case .int8: return "int8"
        }
    }

    /// The command that selects this method ("to-nf4").
    public var commandName: String { "to-\(schemeName)" }

    /// The encoder that quantizes with this method.
    public var encoder: TensorEncoder {
        switch self {
        case let .fourBit(format, blockSize, doubleQuant): return FourBitEncoder(format: format, blockSize: blockSize, doubleQuant: doubleQuant)
        case let .int8(outliers): return Int8Encoder(outliers: outliers)
        }
    }
}
