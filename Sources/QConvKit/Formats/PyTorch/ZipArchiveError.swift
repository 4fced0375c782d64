/// Every way a zip archive (a PyTorch checkpoint's container) is refused,
/// one case per rule.
public enum ZipArchiveError: QConvError, Equatable {
    /// No end-of-central-directory record: the archive is cut short, or not a zip.
    case noEndRecord(file: String)
    /// The archive says it spans several disks.
    case multipleDisks(file: String)
    /// The zip64 locator points at something that is not a zip64 end record.
    case zip64RecordMissing(file: String, offset: UInt64)
    /// The central directory does not lie between the file's start and its end records.
    case directoryOutOfBounds(file: String, offset: UInt64, length: UInt64, limit: UInt64)
    /// A central directory larger than any checkpoint's.
    case directoryTooLarge(file: String, length: UInt64)
    /// More entries than the directory has room for.
    case entryCountTooLarge(file: String, count: UInt64, directoryLength: UInt64)
    /// A directory record without its signature, or running past the directory.
    case invalidDirectoryRecord(file: String, index: Int, offset: UInt64)
    /// A size or offset is marked as zip64 but the entry has no zip64 field for it.
    case zip64FieldMissing(file: String, entry: String)
    /// An encrypted entry.
    case encryptedEntry(file: String, entry: String)
    /// A compressed entry (torch writes stored entries only).
    case compressedEntry(file: String, entry: String, method: UInt16)
    /// A stored entry whose compressed and uncompressed sizes differ.
    case storedSizesDiffer(file: String, entry: String, compressed: UInt64, size: UInt64)
    /// An entry's local header or data does not lie before the central directory.
    case entryOutOfBounds(file: String, entry: String, start: UInt64, end: UInt64, limit: UInt64)
    /// A local header without its signature, or naming another entry.
    case invalidLocalHeader(file: String, entry: String, offset: UInt64)
    /// Two entries with one name.
    case duplicateEntry(file: String, entry: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .noEndRecord(file):
            return "\(file): a zip archive without its end record (the central directory): the file is cut short or damaged"
        case let .multipleDisks(file):
            return "\(file): a zip archive split over several disks, which qconv does not read"
        case let .zip64RecordMissing(file, offset):
            return "\(file): the zip64 locator points at byte \(offset), where there is no zip64 end record"
        case let .directoryOutOfBounds(file, offset, length, limit):
            return "\(file): the zip central directory (\(length) bytes at byte \(offset)) runs past its end record at byte \(limit)"
        case let .directoryTooLarge(file, length):
            return "\(file): a zip central directory of \(length) bytes, more than the \(ZipArchive.maximumDirectoryLength)-byte limit"
        case let .entryCountTooLarge(file, count, directoryLength):
            return "\(file): the zip end record claims \(count) entries, more than a \(directoryLength)-byte central directory holds"
        case let .invalidDirectoryRecord(file, index, offset):
            return "\(file): zip central directory record \(index) at byte \(offset) is damaged (no signature, or it runs past the directory)"
        case let .zip64FieldMissing(file, entry):
            return "\(file): zip entry '\(entry)': sizes marked as zip64 but no zip64 field holds them"
        case let .encryptedEntry(file, entry):
            return "\(file): zip entry '\(entry)' is encrypted; a PyTorch checkpoint's entries never are"
        case let .compressedEntry(file, entry, method):
            return "\(file): zip entry '\(entry)' is compressed (method \(method)); PyTorch writes stored entries only, and qconv reads tensors in place (was the file re-zipped?)"
        case let .storedSizesDiffer(file, entry, compressed, size):
            return "\(file): zip entry '\(entry)' is stored but its sizes differ (\(compressed) stored, \(size) uncompressed)"
        case let .entryOutOfBounds(file, entry, start, end, limit):
            return "\(file): zip entry '\(entry)' (bytes \(start)..<\(end)) runs past the start of the central directory at byte \(limit)"
        case let .invalidLocalHeader(file, entry, offset):
            return "\(file): zip entry '\(entry)': no matching local header at byte \(offset)"
        case let .duplicateEntry(file, entry):
            return "\(file): zip entry '\(entry)' appears twice"
        }
    }
}
