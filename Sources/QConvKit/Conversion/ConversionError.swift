/// Why a conversion refused a tensor.
public enum ConversionError: QConvError, Equatable {
    /// A NaN or infinity in a tensor to be quantized (allowed with `--allow-nonfinite`).
    case nonFiniteValue(file: String, tensor: String, index: Int, value: String)
    /// A tensor selected for quantization whose dtype cannot be decoded to float.
    case notAFloatTensor(file: String, tensor: String, dtype: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .nonFiniteValue(file, tensor, index, value):
            return "\(file): tensor '\(tensor)': element \(index) is \(value); quantizing needs finite values (pass --allow-nonfinite to quantize anyway)"
        case let .notAFloatTensor(file, tensor, dtype):
            return "\(file): tensor '\(tensor)': dtype \(dtype) cannot be quantized (F32, F16, BF16 or F64 only)"
        }
    }
}
