/// Every way a qconv container can be rejected, one case per rule.
public enum ContainerError: QConvError, Equatable {
    case fileTooShort(file: String, size: UInt64)
    case notAContainer(file: String)
    case unsupportedVersion(file: String, version: UInt32)
    case unsupportedFlags(file: String, flags: UInt32)
    case headerTooLarge(file: String, length: UInt64)
    case headerBeyondEndOfFile(file: String, length: UInt64, fileSize: UInt64)
    case headerChecksumMismatch(file: String)
    case headerNotUTF8(file: String)
    case headerNotJSON(file: String, reason: String)
    /// A required field of the header is missing or has the wrong type (`tensor` is empty at the top level).
    case invalidField(file: String, tensor: String, field: String, expected: String)
    case duplicateTensorName(file: String, tensor: String)
    case unknownScheme(file: String, tensor: String, scheme: String)
    case unknownDType(file: String, tensor: String, dtype: String)
    case invalidShape(file: String, tensor: String, reason: String)
    case invalidParameter(file: String, tensor: String, parameter: String, reason: String)
    /// The parts of a tensor are not the ones its scheme needs.
    case wrongParts(file: String, tensor: String, expected: [String], found: [String])
    case partSizeMismatch(file: String, tensor: String, part: String, expected: UInt64, actual: UInt64)
    case partMisaligned(file: String, tensor: String, part: String, offset: UInt64)
    case partOverlap(file: String, tensor: String, part: String, previousTensor: String, previousPart: String)
    case partBeyondEndOfFile(file: String, tensor: String, part: String, end: UInt64, fileSize: UInt64)
    case trailingBytes(file: String, dataEnd: UInt64, fileSize: UInt64)
    case checksumMismatch(file: String, tensor: String, part: String, expected: String, actual: String)
    case paddingNotZero(file: String, offset: UInt64)
    case embeddedFileInvalid(file: String, name: String, reason: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .fileTooShort(file, size):
            return "\(file): not a qconv container: \(size) bytes is shorter than the 32-byte prefix"
        case let .notAContainer(file):
            return "\(file): not a qconv container: the file does not start with QCONVFMT"
        case let .unsupportedVersion(file, version):
            return "\(file): container format version \(version) is not supported (this qconv reads version \(ContainerFormat.version))"
        case let .unsupportedFlags(file, flags):
            return "\(file): container flags \(flags) are not supported (must be 0)"
        case let .headerTooLarge(file, length):
            return "\(file): container header length \(length) exceeds the \(ContainerFormat.maximumHeaderLength)-byte limit"
        case let .headerBeyondEndOfFile(file, length, fileSize):
            return "\(file): container header length \(length) runs past the end of the \(fileSize)-byte file"
        case let .headerChecksumMismatch(file):
            return "\(file): container header checksum mismatch: the header was modified or damaged"
        case let .headerNotUTF8(file):
            return "\(file): container header is not valid UTF-8"
        case let .headerNotJSON(file, reason):
            return "\(file): container header is not valid JSON: \(reason)"
        case let .invalidField(file, tensor, field, expected):
            let scope = tensor.isEmpty ? "" : "tensor '\(tensor)': "
            return "\(file): \(scope)field '\(field)' must be \(expected)"
        case let .duplicateTensorName(file, tensor):
            return "\(file): tensor '\(tensor)': name appears more than once in the container"
        case let .unknownScheme(file, tensor, scheme):
            return "\(file): tensor '\(tensor)': unknown scheme '\(scheme)' (known: \(ContainerScheme.allCases.map(\.rawValue).joined(separator: ", ")))"
        case let .unknownDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)': unknown dtype '\(dtype)'"
        case let .invalidShape(file, tensor, reason):
            return "\(file): tensor '\(tensor)': invalid shape: \(reason)"
        case let .invalidParameter(file, tensor, parameter, reason):
            return "\(file): tensor '\(tensor)': parameter '\(parameter)' \(reason)"
        case let .wrongParts(file, tensor, expected, found):
            return "\(file): tensor '\(tensor)': parts [\(found.joined(separator: ", "))] do not match the scheme's [\(expected.joined(separator: ", "))]"
        case let .partSizeMismatch(file, tensor, part, expected, actual):
            return "\(file): tensor '\(tensor)': part '\(part)' is \(actual) bytes but its dtype and shape need \(expected)"
        case let .partMisaligned(file, tensor, part, offset):
            return "\(file): tensor '\(tensor)': part '\(part)' starts at \(offset), not a multiple of \(ContainerFormat.alignment)"
        case let .partOverlap(file, tensor, part, previousTensor, previousPart):
            return "\(file): tensor '\(tensor)': part '\(part)' overlaps or precedes part '\(previousPart)' of tensor '\(previousTensor)'"
        case let .partBeyondEndOfFile(file, tensor, part, end, fileSize):
            return "\(file): tensor '\(tensor)': part '\(part)' ends at byte \(end) but the file has only \(fileSize) bytes (truncated?)"
        case let .trailingBytes(file, dataEnd, fileSize):
            return "\(file): \(fileSize - dataEnd) trailing bytes after the last part"
        case let .checksumMismatch(file, tensor, part, expected, actual):
            return "\(file): tensor '\(tensor)': part '\(part)' checksum mismatch (xxh64 \(actual), header says \(expected)): the data is damaged"
        case let .paddingNotZero(file, offset):
            return "\(file): padding byte at \(offset) is not zero: the file is damaged"
        case let .embeddedFileInvalid(file, name, reason):
            return "\(file): embedded file '\(name)': \(reason)"
        }
    }
}
