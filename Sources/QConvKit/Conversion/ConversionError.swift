/// Why a conversion refused a tensor's values (exit 3).
public enum ConversionError: QConvError, Equatable {
    /// A NaN or infinity in a tensor to be quantized (allowed when the caller allows non-finite values).
    case nonFiniteValue(file: String, tensor: String, index: Int, value: String)
    /// A finite F32/BF16/F64 value that int8 quantization cannot take: it rounds
    /// values to float16 first (as bitsandbytes quantizes float16 weights), and
    /// `|value| >= 65520` becomes infinite there.
    case float16Overflow(file: String, tensor: String, index: Int, value: String)
    /// Values computed for a tensor (a merge's) that are NaN or infinite once
    /// written in the output dtype (a finite float32 can overflow F16).
    case nonFiniteResults(tensor: String, count: Int)
    /// Sharding or parts asked of an output that is one file (a container).
    case notAFolderOutput(path: String)
    /// A quantized source (a container, a bitsandbytes checkpoint) whose
    /// tensor is stored with another scheme than the one asked for: its codes
    /// can be laid out again, not quantized a second time (which would add
    /// the errors of both).
    case schemeMismatch(path: String, tensor: String, stored: String, asked: String)
    /// A base to merge through a quantization (QLoRA) that holds quantized
    /// tensors already: quantizing its dequantized values again would add the
    /// errors of both.
    case alreadyQuantized(path: String, tensor: String, scheme: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .nonFiniteValue(file, tensor, index, value):
            return "\(file): tensor '\(tensor)': element \(index) is \(value); quantizing needs finite values"
        case let .float16Overflow(file, tensor, index, value):
            return "\(file): tensor '\(tensor)': element \(index) is \(value), which overflows float16 (largest finite value 65504); "
                + "int8 quantization rounds values to float16 first, as bitsandbytes quantizes float16 weights"
        case let .notAFolderOutput(path):
            return "\(path): a qconv container is one file, so it has no shards to split into parts or to size; write a model folder instead"
        case let .schemeMismatch(path, tensor, stored, asked):
            return "\(path): tensor '\(tensor)' is stored as \(stored), not \(asked); its codes can be laid out again only in the "
                + "scheme they have (dequantize it to quantize it differently)"
        case let .alreadyQuantized(path, tensor, scheme):
            return "\(path): holds quantized tensors already (tensor '\(tensor)' is \(scheme)); dequantize it to convert it again"
        case let .nonFiniteResults(tensor, count):
            return "tensor '\(tensor)': \(count) value\(count == 1 ? " is" : "s are") NaN or infinite"
        }
    }
}
