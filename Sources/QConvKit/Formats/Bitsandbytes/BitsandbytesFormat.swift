/// The names transformers gives the pieces of a bitsandbytes-quantized
/// weight in a checkpoint (docs/FORMAT.md, "bitsandbytes checkpoints").
///
/// A 4-bit weight `W` (`P.weight`) is stored as `W` (packed codes, U8
/// `[ceil(n/2), 1]`), `W.absmax`, `W.quant_map`, with double quantization
/// `W.nested_absmax` and `W.nested_quant_map`, and `W.quant_state.bitsandbytes__nf4`
/// (or `__fp4`): the UTF-8 JSON of its `BitsandbytesQuantState`. An 8-bit
/// weight is `W` (I8), `P.SCB` (F32 row scales) and `P.weight_format` (U8 0).
public enum BitsandbytesPiece {
    public static let absmax = "absmax"
    public static let quantMap = "quant_map"
    public static let nestedAbsmax = "nested_absmax"
    public static let nestedQuantMap = "nested_quant_map"
    /// `W.quant_state.bitsandbytes__nf4`: what precedes the format's name.
    public static let quantStatePrefix = "quant_state.bitsandbytes__"
    /// int8: `P.SCB` and `P.weight_format`, where `W` is `P.weight`.
    public static let rowScales = "SCB"
    public static let weightFormat = "weight_format"
    /// The suffix every quantized weight's name has (`P.weight`).
    public static let weightSuffix = ".weight"

    /// `W.quant_state.bitsandbytes__nf4`.
    public static func quantStateName(of weight: String, format: FourBitFormat) -> String {
        "\(weight).\(quantStatePrefix)\(format.rawValue)"
    }

    /// `P` of `W` = `P.weight` (int8 pieces are named after the module).
    public static func module(of weight: String) -> String? {
        weight.hasSuffix(weightSuffix) ? String(weight.dropLast(weightSuffix.count)) : nil
    }

    /// The 16 float32 code values bitsandbytes stores as `quant_map`.
    public static func quantMapValues(_ format: FourBitFormat) -> [Float] { format.codebook }

    /// The 256 float32 values bitsandbytes stores as `nested_quant_map`.
    public static var nestedQuantMapValues: [Float] { DoubleQuantization.dynamicMap }
}

/// torch's names of the float dtypes bitsandbytes records (`float16`, `bfloat16`, `float32`).
public enum TorchDTypeName {
    public static func name(of dtype: DType) -> String? {
        switch dtype {
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .f32: return "float32"
        default: return nil
        }
    }

    public static func dtype(named name: String) -> DType? {
        switch name {
        case "float16": return .f16
        case "bfloat16": return .bf16
        case "float32": return .f32
        default: return nil
        }
    }
}

/// The JSON blob stored as `W.quant_state.bitsandbytes__*`: what
/// bitsandbytes' `QuantState.as_dict(packed=True)` records besides tensors.
public struct BitsandbytesQuantState: Equatable, Sendable {
    public var format: FourBitFormat
    public var blockSize: Int
    /// The weight's dtype before quantization (what dequantizing gives back).
    public var dtype: DType
    public var shape: [Int]
    /// The double-quantization offset; nil without double quantization.
    public var nestedOffset: Float?

    public init(format: FourBitFormat, blockSize: Int, dtype: DType, shape: [Int], nestedOffset: Float?) {
        self.format = format
        self.blockSize = blockSize
        self.dtype = dtype
        self.shape = shape
        self.nestedOffset = nestedOffset
    }

    /// The state of a 4-bit tensor stored with `parameters`.
    public init(_ tensor: TensorInfo, _ parameters: FourBitParameters) {
        let offset: Float?
        switch parameters.blockScales {
        case .float32: offset = nil
        case .doubleQuantized(let value): offset = value
        }
        self.init(format: parameters.format, blockSize: parameters.blockSize, dtype: tensor.dtype, shape: tensor.shape, nestedOffset: offset)
    }

    /// The scheme a tensor with this state has.
    public var parameters: FourBitParameters {
        FourBitParameters(format: format, blockSize: blockSize, blockScales: nestedOffset.map { .doubleQuantized(offset: $0) } ?? .float32)
    }

    /// The keys bitsandbytes' `QuantState.from_dict` accepts (tensor pieces included).
    static let validKeys: Set<String> = ["absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state", "quant_type",
                                         "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"]

    /// Python's `json.dumps` of the dict, keys in bitsandbytes' order:
    /// `{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [64, 176], "nested_blocksize": 256, ...}`.
    public var json: String {
        let dtypeName = TorchDTypeName.name(of: dtype) ?? dtype.rawValue
        var text = "{\"quant_type\": \"\(format.rawValue)\", \"blocksize\": \(blockSize), \"dtype\": \"\(dtypeName)\", "
            + "\"shape\": [\(shape.map(String.init).joined(separator: ", "))]"
        if let nestedOffset {
            text += ", \"nested_blocksize\": \(DoubleQuantization.nestedBlockSize), \"nested_dtype\": \"float32\", "
                + "\"nested_offset\": \(PythonFloat.text(Double(nestedOffset)))"
        }
        return text + "}"
    }

    /// Reads a blob; the error is the rule it breaks, for `BitsandbytesError.quantStateInvalid`.
    public static func parse(_ bytes: [UInt8]) -> Result<BitsandbytesQuantState, QuantStateProblem> {
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch { return .failure(QuantStateProblem("is not valid JSON (\(error))")) }
        guard let object = root.objectValue else { return .failure(QuantStateProblem("is \(root.kindDescription), not a JSON object")) }
        if let unknown = object.keys.first(where: { !validKeys.contains($0) }) {
            return .failure(QuantStateProblem("has the key \"\(unknown)\", which bitsandbytes does not accept"))
        }
        if let duplicate = object.keys.enumerated().first(where: { object.keys[..<$0.offset].contains($0.element) }) {
            return .failure(QuantStateProblem("has the key \"\(duplicate.element)\" twice"))
        }
        guard let typeName = object["quant_type"]?.stringValue, let format = FourBitFormat(rawValue: typeName) else {
            return .failure(QuantStateProblem("\"quant_type\" must be \"nf4\" or \"fp4\""))
        }
        guard let blockSize = object["blocksize"]?.numberValue?.intValue, Blockwise4Bit.supportedBlockSizes.contains(blockSize) else {
            return .failure(QuantStateProblem("\"blocksize\" must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", "))"))
        }
        guard let dtypeName = object["dtype"]?.stringValue, let dtype = TorchDTypeName.dtype(named: dtypeName) else {
            return .failure(QuantStateProblem("\"dtype\" must be \"float16\", \"bfloat16\" or \"float32\""))
        }
        guard let items = object["shape"]?.arrayValue, !items.isEmpty else {
            return .failure(QuantStateProblem("\"shape\" must be a non-empty array of sizes"))
        }
        let shape = items.compactMap { $0.numberValue?.intValue }.filter { $0 >= 0 }
        guard shape.count == items.count, elementCount(of: shape) != nil else {
            return .failure(QuantStateProblem("\"shape\" must be a non-empty array of sizes"))
        }
        let nestedKeys = ["nested_blocksize", "nested_dtype", "nested_offset"].filter { object[$0] != nil }
        guard nestedKeys.isEmpty || nestedKeys.count == 3 else {
            return .failure(QuantStateProblem("has \(nestedKeys.joined(separator: ", ")) but not all of nested_blocksize, nested_dtype, nested_offset"))
        }
        var offset: Float?
        if !nestedKeys.isEmpty {
            guard object["nested_blocksize"]?.numberValue?.intValue == DoubleQuantization.nestedBlockSize else {
                return .failure(QuantStateProblem("\"nested_blocksize\" must be \(DoubleQuantization.nestedBlockSize)"))
            }
            guard object["nested_dtype"]?.stringValue == "float32" else {
                return .failure(QuantStateProblem("\"nested_dtype\" must be \"float32\""))
            }
            guard let value = object["nested_offset"]?.numberValue?.doubleValue, value.isFinite else {
                return .failure(QuantStateProblem("\"nested_offset\" must be a finite number"))
            }
            offset = Float(value)
        }
        return .success(BitsandbytesQuantState(format: format, blockSize: blockSize, dtype: dtype, shape: shape, nestedOffset: offset))
    }
}

/// The product of `shape`, nil when it overflows (or could not be addressed in bits).
private func elementCount(of shape: [Int]) -> Int? {
    var product = 1
    for dimension in shape {
        let (next, overflow) = product.multipliedReportingOverflow(by: dimension)
        guard !overflow, next <= Int.max / 64 else { return nil }
        product = next
    }
    return product
}

/// Why a quant-state blob was refused (a phrase: "is not valid JSON").
public struct QuantStateProblem: Error, Equatable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
}
