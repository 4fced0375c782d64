/// Why a conversion refused a tensor.
public enum ConversionError: QConvError, Equatable {
    /// A NaN or infinity in a tensor to be quantized (allowed with `--allow-nonfinite`).
    case nonFiniteValue(file: String, tensor: String, index: Int, value: String)
    /// A finite F32/BF16/F64 value that int8 quantization cannot take: it rounds
    /// values to float16 first (as bitsandbytes quantizes float16 weights), and
    /// `|value| >= 65520` becomes infinite there.
    case float16Overflow(file: String, tensor: String, index: Int, value: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .nonFiniteValue(file, tensor, index, value):
            return "\(file): tensor '\(tensor)': element \(index) is \(value); quantizing needs finite values (pass --allow-nonfinite to quantize anyway)"
        case let .float16Overflow(file, tensor, index, value):
            return "\(file): tensor '\(tensor)': element \(index) is \(value), which overflows float16 (largest finite value 65504); "
                + "int8 quantization rounds values to float16 first, as bitsandbytes quantizes float16 weights (keep the tensor unquantized with --skip)"
        }
    }
}
