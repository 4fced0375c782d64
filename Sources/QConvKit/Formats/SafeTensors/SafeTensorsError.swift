/// Every way a safetensors file can be rejected, one case per rule.
///
/// The order of the rules follows the reference reader (huggingface/safetensors):
/// length prefix, header size, UTF-8, JSON, dtypes and metadata, offsets,
/// sizes, trailing bytes. Rules the reference reader does not enforce but the
/// format requires (duplicate names, missing fields, negative numbers) are
/// checked as well.
public enum SafeTensorsError: QConvError, Equatable {
    /// The file cannot hold the 8-byte header length.
    case fileTooShort(file: String, size: UInt64)
    /// The header length exceeds the 100,000,000-byte cap.
    case headerTooLarge(file: String, length: UInt64)
    /// The header length points past the end of the file.
    case headerBeyondEndOfFile(file: String, length: UInt64, fileSize: UInt64)
    /// The header bytes are not valid UTF-8.
    case headerNotUTF8(file: String)
    /// The header is not valid JSON.
    case headerNotJSON(file: String, reason: String)
    /// The header is valid JSON but not an object.
    case headerNotObject(file: String, found: String)
    /// Two entries share one name.
    case duplicateTensorName(file: String, tensor: String)
    /// `__metadata__` is not an object.
    case metadataNotObject(file: String, found: String)
    /// A `__metadata__` value is not a string.
    case metadataValueNotString(file: String, key: String, found: String)
    /// A tensor entry is not an object.
    case tensorEntryNotObject(file: String, tensor: String, found: String)
    /// A tensor entry lacks `dtype`, `shape` or `data_offsets`.
    case missingField(file: String, tensor: String, field: String)
    /// A tensor entry's field has the wrong JSON type or arity.
    case invalidField(file: String, tensor: String, field: String, expected: String)
    /// The dtype is not one of the format's dtypes.
    case unknownDType(file: String, tensor: String, dtype: String)
    /// A shape dimension or offset is negative.
    case negativeNumber(file: String, tensor: String, field: String, value: String)
    /// A shape dimension or offset is not an integer that fits in 64 bits.
    case numberOutOfRange(file: String, tensor: String, field: String, value: String)
    /// `data_offsets` has its end before its begin.
    case offsetsReversed(file: String, tensor: String, begin: UInt64, end: UInt64)
    /// Sorted by offset, the tensors leave a hole or overlap (or do not start at 0).
    case offsetsNotContiguous(file: String, tensor: String, begin: UInt64, expected: UInt64)
    /// The product of the shape overflows.
    case shapeOverflow(file: String, tensor: String, shape: String)
    /// The data size of the tensor overflows.
    case byteCountOverflow(file: String, tensor: String, shape: String)
    /// The tensor's bit count is not a whole number of bytes (F4, F6 types).
    case bitsNotByteAligned(file: String, tensor: String, dtype: String, elements: Int)
    /// `END - BEGIN` differs from the shape's byte count.
    case tensorSizeMismatch(file: String, tensor: String, expected: UInt64, actual: UInt64)
    /// The file is shorter than the header says its data is.
    case dataBeyondEndOfFile(file: String, dataEnd: UInt64, fileSize: UInt64)
    /// The file has bytes after the last tensor's data.
    case trailingBytes(file: String, dataEnd: UInt64, fileSize: UInt64)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .fileTooShort(file, size):
            return "\(file): not a safetensors file: \(size) bytes, shorter than the 8-byte header length"
        case let .headerTooLarge(file, length):
            return "\(file): header length \(length) exceeds the 100000000-byte limit"
        case let .headerBeyondEndOfFile(file, length, fileSize):
            return "\(file): header length \(length) runs past the end of the \(fileSize)-byte file"
        case let .headerNotUTF8(file):
            return "\(file): header is not valid UTF-8"
        case let .headerNotJSON(file, reason):
            return "\(file): header is not valid JSON: \(reason)"
        case let .headerNotObject(file, found):
            return "\(file): header must be a JSON object, found \(found)"
        case let .duplicateTensorName(file, tensor):
            return "\(file): tensor '\(tensor)': name appears more than once in the header"
        case let .metadataNotObject(file, found):
            return "\(file): __metadata__ must be an object of strings, found \(found)"
        case let .metadataValueNotString(file, key, found):
            return "\(file): __metadata__ value '\(key)' must be a string, found \(found)"
        case let .tensorEntryNotObject(file, tensor, found):
            return "\(file): tensor '\(tensor)': entry must be an object, found \(found)"
        case let .missingField(file, tensor, field):
            return "\(file): tensor '\(tensor)': missing field '\(field)'"
        case let .invalidField(file, tensor, field, expected):
            return "\(file): tensor '\(tensor)': field '\(field)' must be \(expected)"
        case let .unknownDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)': unknown dtype '\(dtype)'"
        case let .negativeNumber(file, tensor, field, value):
            return "\(file): tensor '\(tensor)': \(field) has a negative value \(value)"
        case let .numberOutOfRange(file, tensor, field, value):
            return "\(file): tensor '\(tensor)': \(field) value \(value) is not an integer in 0...2^64-1"
        case let .offsetsReversed(file, tensor, begin, end):
            return "\(file): tensor '\(tensor)': data_offsets [\(begin), \(end)] end before they begin"
        case let .offsetsNotContiguous(file, tensor, begin, expected):
            let what = begin > expected ? "leaves a hole" : "overlaps the previous tensor"
            return "\(file): tensor '\(tensor)': data begins at \(begin) but the previous tensor ends at \(expected); the data \(what)"
        case let .shapeOverflow(file, tensor, shape):
            return "\(file): tensor '\(tensor)': element count of shape \(shape) overflows"
        case let .byteCountOverflow(file, tensor, shape):
            return "\(file): tensor '\(tensor)': byte count of shape \(shape) overflows"
        case let .bitsNotByteAligned(file, tensor, dtype, elements):
            return "\(file): tensor '\(tensor)': \(elements) elements of \(dtype) are not a whole number of bytes"
        case let .tensorSizeMismatch(file, tensor, expected, actual):
            return "\(file): tensor '\(tensor)': data_offsets span \(actual) bytes but dtype and shape need \(expected)"
        case let .dataBeyondEndOfFile(file, dataEnd, fileSize):
            return "\(file): tensor data ends at byte \(dataEnd) but the file has only \(fileSize) bytes (truncated?)"
        case let .trailingBytes(file, dataEnd, fileSize):
            return "\(file): \(fileSize - dataEnd) trailing bytes after the last tensor's data"
        }
    }
}
