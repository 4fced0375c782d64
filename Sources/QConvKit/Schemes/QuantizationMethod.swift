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

    /// Whether a tensor stored with `scheme` is what this method makes:
    /// the same 4-bit format, block size and double quantization, or int8.
    public func matches(_ scheme: TensorScheme) -> Bool {
        switch (self, scheme) {
        case let (.fourBit(format, blockSize, doubleQuant), .fourBit(p)):
            return p.format == format && p.blockSize == blockSize && (p.blockScales != .float32) == doubleQuant
        case (.int8, .int8): return true
        case (.fourBit, _), (.int8, _): return false
        }
    }

    /// "nf4, block size 64, double quant" or "int8": for messages.
    public var summary: String {
        switch self {
        case let .fourBit(format, blockSize, doubleQuant): return "\(format.rawValue), block size \(blockSize)" + (doubleQuant ? ", double quant" : "")
        case .int8: return "int8"
        }
    }

    /// The command that selects this method ("to-nf4").
    public var commandName: String { "to-\(schemeName)" }

    /// The encoder that quantizes with this method (for a qconv container).
    public var encoder: TensorEncoder { encoder(mean: .float64) }

    /// The encoder that quantizes with this method, taking a double-quantization
    /// offset computed by `mean` (`.torchFloat32` for bitsandbytes' layout).
    public func encoder(mean: DoubleQuantization.Mean) -> TensorEncoder {
        switch self {
        case let .fourBit(format, blockSize, doubleQuant): return FourBitEncoder(format: format, blockSize: blockSize, doubleQuant: doubleQuant, mean: mean)
        case let .int8(outliers): return Int8Encoder(outliers: outliers)
        }
    }
}
