/// Every way a qconv container can be rejected, one case per rule.
///
/// `file` is the container's path; `tensor` and `part` name where the rule was
/// broken (`tensor` is empty for rules about the whole header, and "(file)" for
/// layout rules broken by an embedded file, whose name is then `part`).
public enum ContainerError: QConvError, Equatable {
    /// The file is shorter than the 32-byte prefix.
    case fileTooShort(file: String, size: UInt64)
    /// The file does not start with the magic `QCONVFMT`.
    case notAContainer(file: String)
    /// The prefix's format version is not the one this qconv reads.
    case unsupportedVersion(file: String, version: UInt32)
    /// The prefix's flags are not 0.
    case unsupportedFlags(file: String, flags: UInt32)
    /// The header length exceeds `ContainerFormat.maximumHeaderLength`.
    case headerTooLarge(file: String, length: UInt64)
    /// The header length runs past the end of the file.
    case headerBeyondEndOfFile(file: String, length: UInt64, fileSize: UInt64)
    /// The header bytes do not have the xxHash64 the prefix records.
    case headerChecksumMismatch(file: String)
    /// The header is not valid UTF-8.
    case headerNotUTF8(file: String)
    /// The header is not valid JSON (`reason` is the parser's message).
    case headerNotJSON(file: String, reason: String)
    /// The header's `version` field is not the integer 1 (`found` is its JSON text).
    case headerVersionMismatch(file: String, found: String)
    /// A required field of the header is missing or has the wrong type (`tensor` is empty at the top level).
    case invalidField(file: String, tensor: String, field: String, expected: String)
    /// Two tensors have the same name.
    case duplicateTensorName(file: String, tensor: String)
    /// A tensor's `scheme` is not one of `TensorScheme.names`.
    case unknownScheme(file: String, tensor: String, scheme: String)
    /// A tensor's or part's `dtype` is not one of `DType`.
    case unknownDType(file: String, tensor: String, dtype: String)
    /// A tensor's or part's shape has an element count that overflows.
    case invalidShape(file: String, tensor: String, reason: String)
    /// A scheme parameter has a value the scheme does not allow (block size, nested block size, offset bits, dtype).
    case invalidParameter(file: String, tensor: String, parameter: String, reason: String)
    /// An int8 tensor's `outlier_rule` is not `none`, `abs:T` or `rms:K`.
    case unknownOutlierRule(file: String, tensor: String, rule: String)
    /// The parts of a tensor are not the ones its scheme needs.
    case wrongParts(file: String, tensor: String, expected: [String], found: [String])
    /// A part's `length` differs from what its dtype and shape need.
    case partSizeMismatch(file: String, tensor: String, part: String, expected: UInt64, actual: UInt64)
    /// A region's offset is not a multiple of `ContainerFormat.alignment`.
    case partMisaligned(file: String, tensor: String, part: String, offset: UInt64)
    /// A region starts before the previous region (in header order) ends.
    case partOverlap(file: String, tensor: String, part: String, previousTensor: String, previousPart: String)
    /// A region starts `gap` bytes after the previous one ends, more than the
    /// padding to the next aligned offset (writers never leave more).
    case gapTooLarge(file: String, tensor: String, part: String, gap: UInt64)
    /// A region ends past the end of the file.
    case partBeyondEndOfFile(file: String, tensor: String, part: String, end: UInt64, fileSize: UInt64)
    /// Bytes follow the last region.
    case trailingBytes(file: String, dataEnd: UInt64, fileSize: UInt64)
    /// A tensor part's bytes do not have the xxHash64 the header records.
    case checksumMismatch(file: String, tensor: String, part: String, expected: String, actual: String)
    /// An embedded file's bytes do not have the xxHash64 the header records.
    case embeddedFileChecksumMismatch(file: String, name: String, expected: String, actual: String)
    /// A padding byte between regions is not zero (`offset` is from the start of the file).
    case paddingNotZero(file: String, offset: UInt64)
    /// An int8 tensor's `outlier_columns` part holds an index that is out of
    /// range or not above the one before it (`position` is its index in the part).
    case invalidOutlierColumn(file: String, tensor: String, position: Int, column: Int, columns: Int)
    /// An embedded file's name is not a plain, visible file name that `dequant`
    /// can write beside the weights (see `ContainerFormat.embeddedFileNameProblem`).
    case unsafeEmbeddedFileName(file: String, name: String, reason: String)
    /// Two embedded files have the same name.
    case duplicateEmbeddedFileName(file: String, name: String)
    /// An embedded file's name is also the folder of another's path (`a` and `a/b`).
    case embeddedFileIsAlsoAFolder(file: String, name: String)

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
        case let .headerVersionMismatch(file, found):
            return "\(file): container header field 'version' is \(found), but must be \(ContainerFormat.version) (the format version this qconv reads)"
        case let .invalidField(file, tensor, field, expected):
            let scope = tensor.isEmpty ? "" : "tensor '\(tensor)': "
            return "\(file): \(scope)field '\(field)' must be \(expected)"
        case let .duplicateTensorName(file, tensor):
            return "\(file): tensor '\(tensor)': name appears more than once in the container"
        case let .unknownScheme(file, tensor, scheme):
            return "\(file): tensor '\(tensor)': unknown scheme '\(scheme)' (known: \(TensorScheme.names.joined(separator: ", ")))"
        case let .unknownDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)': unknown dtype '\(dtype)'"
        case let .invalidShape(file, tensor, reason):
            return "\(file): tensor '\(tensor)': invalid shape: \(reason)"
        case let .invalidParameter(file, tensor, parameter, reason):
            return "\(file): tensor '\(tensor)': parameter '\(parameter)' \(reason)"
        case let .unknownOutlierRule(file, tensor, rule):
            return "\(file): tensor '\(tensor)': parameter 'outlier_rule' is '\(rule)', not one of none, abs:T or rms:K (T, K positive numbers)"
        case let .wrongParts(file, tensor, expected, found):
            return "\(file): tensor '\(tensor)': parts [\(found.joined(separator: ", "))] do not match the scheme's [\(expected.joined(separator: ", "))]"
        case let .partSizeMismatch(file, tensor, part, expected, actual):
            return "\(file): tensor '\(tensor)': part '\(part)' is \(actual) bytes but its dtype and shape need \(expected)"
        case let .partMisaligned(file, tensor, part, offset):
            return "\(file): tensor '\(tensor)': part '\(part)' starts at \(offset), not a multiple of \(ContainerFormat.alignment)"
        case let .partOverlap(file, tensor, part, previousTensor, previousPart):
            return "\(file): tensor '\(tensor)': part '\(part)' overlaps or precedes part '\(previousPart)' of tensor '\(previousTensor)'"
        case let .gapTooLarge(file, tensor, part, gap):
            return "\(file): tensor '\(tensor)': part '\(part)' starts \(gap) bytes after the previous region ends; regions may be separated only by padding to the next multiple of \(ContainerFormat.alignment)"
        case let .partBeyondEndOfFile(file, tensor, part, end, fileSize):
            return "\(file): tensor '\(tensor)': part '\(part)' ends at byte \(end) but the file has only \(fileSize) bytes (truncated?)"
        case let .trailingBytes(file, dataEnd, fileSize):
            return "\(file): \(fileSize - dataEnd) trailing bytes after the last part"
        case let .checksumMismatch(file, tensor, part, expected, actual):
            return "\(file): tensor '\(tensor)': part '\(part)' checksum mismatch (xxh64 \(actual), header says \(expected)): the data is damaged"
        case let .embeddedFileChecksumMismatch(file, name, expected, actual):
            return "\(file): embedded file '\(name)': checksum mismatch (xxh64 \(actual), header says \(expected)): the data is damaged"
        case let .paddingNotZero(file, offset):
            return "\(file): padding byte at \(offset) is not zero: the file is damaged"
        case let .invalidOutlierColumn(file, tensor, position, column, columns):
            return "\(file): tensor '\(tensor)': part 'outlier_columns' entry \(position) is \(column); outlier columns must be strictly increasing indices below \(columns)"
        case let .unsafeEmbeddedFileName(file, name, reason):
            // JSON-quoted: the name may hold control characters, and the message stays one line.
            return "\(file): embedded file \(JSONWriter.serialize(.string(name))): unsafe name: \(reason)"
        case let .embeddedFileIsAlsoAFolder(file, name):
            return "\(file): embedded file '\(name)': the name is also the folder of another embedded file's path"
        case let .duplicateEmbeddedFileName(file, name):
            return "\(file): embedded file '\(name)': name appears more than once in the container"
        }
    }
}
