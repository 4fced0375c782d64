/// How a tensor is stored: as it was (`raw`), or quantized by one of the
/// methods bitsandbytes defines. Each case carries exactly the parameters a
/// reader needs to decode it; `parts(for:)` says which parts it has.
public enum TensorScheme: Equatable, Sendable {
    /// The tensor's bytes in its own dtype (unquantized tensors, non-float tensors).
    case raw
    /// NF4 or FP4 blocks, bitsandbytes' `quantize_4bit`.
    case fourBit(FourBitParameters)
    /// Row-wise int8 (LLM.int8), with outlier columns kept in FP16.
    case int8(Int8Parameters)
    /// FP8 weights with their scales, as FP8 checkpoints store them: the
    /// values are `float32(w) × scale`. qconv decodes it, but writes no
    /// format that holds it: a copy is decoded to the tensor's dtype.
    case scaledFP8(ScaledFP8Parameters)
    /// Unquantized, but a non-contiguous view of stored bytes (a transposed
    /// tensor of a PyTorch checkpoint): its one part is the span of the
    /// storage the view covers. Copies write it contiguous (`.raw`); no
    /// output format holds it.
    case strided(StridedLayout)

    /// Every scheme name, in the order reports list them.
    public static let names = ["raw", "nf4", "fp4", "int8"]

    /// "raw", "nf4", "fp4" or "int8": the name in container headers and reports.
    public var name: String {
        switch self {
        case .raw: return "raw"
        case .fourBit(let parameters): return parameters.format.rawValue
        case .int8: return "int8"
        case .strided: return "strided"
        case .scaledFP8: return "fp8"
        }
    }

    /// "nf4, block size 64, double quant", "int8", "int8, 3 outlier columns", "raw": for messages and reports.
    public var summary: String {
        switch self {
        case .raw: return "raw"
        case .fourBit(let p): return "\(p.format.rawValue), block size \(p.blockSize)" + (p.blockScales == .float32 ? "" : ", double quant")
        case .int8(let p):
            let k = p.outlierColumnCount
            return k == 0 ? "int8" : "int8, \(k) outlier column\(k == 1 ? "" : "s")"
        case .strided: return "strided"
        case .scaledFP8(let p): return "fp8 (\(p.valuesDType.rawValue)), per \(p.granularityDescription) scale"
        }
    }

    public var isQuantized: Bool {
        switch self {
        case .raw, .strided: return false
        case .fourBit, .int8, .scaledFP8: return true
        }
    }

    /// The method that stores a tensor with this scheme again (a merge into
    /// a quantized base re-quantizes what it changed); nil for `raw`.
    public var method: QuantizationMethod? {
        switch self {
        case .raw, .strided, .scaledFP8: return nil
        case .fourBit(let p): return .fourBit(p.format, blockSize: p.blockSize, doubleQuant: p.blockScales != .float32)
        case .int8(let p): return .int8(outliers: p.outlierRule)
        }
    }

    /// The parts `tensor` stored with this scheme has, in storage order. The
    /// first is the bulk (`data` or `codes`), read range by range; the others
    /// are side data (scales, outlier columns), small enough to be read whole.
    public func parts(for tensor: TensorInfo) -> [PartLayout] {
        let n = tensor.elementCount
        switch self {
        case .raw:
            return [PartLayout(.data, tensor.dtype, tensor.shape)]
        case .strided(let layout):
            return [PartLayout(.data, tensor.dtype, [layout.span])]
        case .scaledFP8(let p):
            return [PartLayout(.codes, p.valuesDType, tensor.shape), PartLayout(.scale, p.scaleDType, p.scaleShape)]
        case .fourBit(let p):
            let blocks = divideRoundingUp(n, p.blockSize)
            let codes = PartLayout(.codes, .u8, [Blockwise4Bit.packedByteCount(elementCount: n)])
            switch p.blockScales {
            case .float32:
                return [codes, PartLayout(.absmax, .f32, [blocks])]
            case .doubleQuantized:
                return [codes, PartLayout(.absmaxCodes, .u8, [blocks]),
                        PartLayout(.nestedAbsmax, .f32, [divideRoundingUp(blocks, DoubleQuantization.nestedBlockSize)])]
            }
        case .int8(let p):
            let (rows, columns) = tensor.matrixShape
            return [
                PartLayout(.codes, .i8, [rows, columns]),
                PartLayout(.rowScales, .f32, [rows]),
                PartLayout(.outlierColumns, .i32, [p.outlierColumnCount]),
                PartLayout(.outlierValues, .f16, [rows, p.outlierColumnCount]),
            ]
        }
    }
}

/// The parameters of a 4-bit tensor.
public struct FourBitParameters: Equatable, Sendable {
    public var format: FourBitFormat
    /// Elements per block: one of `Blockwise4Bit.supportedBlockSizes`.
    public var blockSize: Int
    public var blockScales: BlockScales

    public init(format: FourBitFormat, blockSize: Int, blockScales: BlockScales) {
        self.format = format
        self.blockSize = blockSize
        self.blockScales = blockScales
    }
}

/// How the per-block absmax values of a 4-bit tensor are stored.
public enum BlockScales: Equatable, Sendable {
    /// One float32 per block (`absmax`).
    case float32
    /// Double quantization (bitsandbytes' `compress_statistics`): `absmax -
    /// offset` as 8-bit codes of the dynamic map in blocks of 256
    /// (`absmax_codes`), with one float32 scale per nested block
    /// (`nested_absmax`); `offset` is the mean of the absmax values.
    case doubleQuantized(offset: Float)

    public static func == (a: BlockScales, b: BlockScales) -> Bool {
        switch (a, b) {
        case (.float32, .float32): return true
        // The bits, so that a NaN offset equals itself.
        case let (.doubleQuantized(x), .doubleQuantized(y)): return x.bitPattern == y.bitPattern
        case (.float32, .doubleQuantized), (.doubleQuantized, .float32): return false
        }
    }
}

/// The parameters of an int8 tensor.
public struct Int8Parameters: Equatable, Sendable {
    /// How the outlier columns were chosen; a merge that quantizes the tensor
    /// again chooses them the same way.
    public var outlierRule: OutlierCriterion
    /// Columns kept in FP16 (the length of the `outlier_columns` part).
    public var outlierColumnCount: Int
    /// The element threshold the rule resolved to for this tensor, for
    /// people; nil when no column was split off.
    public var outlierThreshold: Double?

    public init(outlierRule: OutlierCriterion, outlierColumnCount: Int, outlierThreshold: Double?) {
        self.outlierRule = outlierRule
        self.outlierColumnCount = outlierColumnCount
        self.outlierThreshold = outlierThreshold
    }
}

/// The parts of a stored tensor, named as container headers name them.
public enum PartName: String, CaseIterable, Sendable {
    /// A raw tensor's bytes.
    case data
    /// Packed 4-bit codes, int8 codes, or FP8 values.
    case codes
    /// 4-bit: one float32 scale per block.
    case absmax
    /// 4-bit, double-quantized: one 8-bit code per block.
    case absmaxCodes = "absmax_codes"
    /// 4-bit, double-quantized: one float32 scale per 256 blocks.
    case nestedAbsmax = "nested_absmax"
    /// int8: one float32 scale per row.
    case rowScales = "row_scales"
    /// int8: the outlier column indices, int32, ascending.
    case outlierColumns = "outlier_columns"
    /// int8: the outlier columns' values, FP16, `[rows, k]`.
    case outlierValues = "outlier_values"
    /// FP8: the scales (one, one per row, or one per block).
    case scale
}

/// One part of a stored tensor: its name, dtype and shape.
public struct PartLayout: Equatable, Sendable {
    public var name: PartName
    public var dtype: DType
    public var shape: [Int]

    public init(_ name: PartName, _ dtype: DType, _ shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Bytes its dtype and shape take.
    public var byteCount: UInt64 { UInt64(TensorInfo(name: name.rawValue, dtype: dtype, shape: shape).byteCount) }

    /// "codes U8 [22016]", for messages.
    public var description: String { "\(name.rawValue) \(dtype.rawValue) \(shape)" }
}
