/// The entries of a zip archive, found through its central directory: the
/// container of a PyTorch checkpoint (torch >= 1.6 writes one with stored
/// entries). Only what such checkpoints use is read: single-disk archives,
/// stored (uncompressed) and unencrypted entries, with or without zip64
/// records. Opening reads the directory and every local header, never the
/// entries' data; `Entry.dataOffset` says where each one's bytes are.
public struct ZipArchive {
    public struct Entry: Sendable {
        public let name: String
        /// Absolute position of the entry's first data byte in the file.
        public let dataOffset: UInt64
        public let length: UInt64
    }

    public let file: ReadableFile
    /// Every entry, in central directory order.
    public let entries: [Entry]
    private let byName: [String: Int]

    /// The largest central directory read (about 100 bytes per entry; a
    /// checkpoint has a few per tensor).
    static let maximumDirectoryLength: UInt64 = 100_000_000

    static let endSignature: UInt32 = 0x0605_4B50
    static let zip64EndSignature: UInt32 = 0x0606_4B50
    static let zip64LocatorSignature: UInt32 = 0x0706_4B50
    static let centralSignature: UInt32 = 0x0201_4B50
    static let localSignature: UInt32 = 0x0403_4B50

    /// Reads the central directory of `file` and locates every entry's data.
    ///
    /// - Throws: `ZipArchiveError` for anything but a complete archive of
    ///   stored entries, `IOError` when reading fails.
    public init(file: ReadableFile) throws {
        self.file = file
        let directory = try Self.findDirectory(file)
        var entries: [Entry] = []
        var byName: [String: Int] = [:]
        let bytes = try file.readBytes(at: directory.offset, count: Int(directory.length))
        var position = 0
        for index in 0..<directory.count {
            let record = try CentralRecord(bytes, at: position, index: index, archive: file.path, directoryOffset: directory.offset)
            let entry = try Self.locate(record, in: file, before: directory.offset)
            if byName[entry.name] != nil { throw ZipArchiveError.duplicateEntry(file: file.path, entry: entry.name) }
            byName[entry.name] = entries.count
            entries.append(entry)
            position = record.end
        }
        self.entries = entries
        self.byName = byName
    }

    public func entry(named name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// A small entry's bytes.
    public func read(_ entry: Entry) throws -> [UInt8] {
        try file.readBytes(at: entry.dataOffset, count: Int(entry.length))
    }

    /// Where the central directory is, from the end record (and the zip64 end
    /// record its locator points to, when there is one).
    private static func findDirectory(_ file: ReadableFile) throws -> (offset: UInt64, length: UInt64, count: Int) {
        let path = file.path
        let tailLength = Int(min(file.size, 22 + 0xFFFF))
        let tail = try file.readBytes(at: file.size - UInt64(tailLength), count: tailLength)
        let tailStart = file.size - UInt64(tailLength)
        // The last end record whose comment fits in the file.
        var found: Int?
        var i = tailLength - 22
        while i >= 0 {
            if tail.le32(i) == endSignature && i + 22 + Int(tail.le16(i + 20)) <= tailLength { found = i; break }
            i -= 1
        }
        guard let end = found else { throw ZipArchiveError.noEndRecord(file: path) }
        guard tail.le16(end + 4) == 0 && tail.le16(end + 6) == 0 else { throw ZipArchiveError.multipleDisks(file: path) }
        var count = UInt64(tail.le16(end + 10))
        var length = UInt64(tail.le32(end + 12))
        var offset = UInt64(tail.le32(end + 16))
        var limit = tailStart + UInt64(end)
        if end >= 20 && tail.le32(end - 20) == zip64LocatorSignature {
            let recordOffset = tail.le64(end - 20 + 8)
            guard recordOffset <= limit - 20, limit - 20 - recordOffset >= 56 else {
                throw ZipArchiveError.zip64RecordMissing(file: path, offset: recordOffset)
            }
            let record = try file.readBytes(at: recordOffset, count: 56)
            guard record.le32(0) == zip64EndSignature else { throw ZipArchiveError.zip64RecordMissing(file: path, offset: recordOffset) }
            guard record.le32(16) == 0 && record.le32(20) == 0 else { throw ZipArchiveError.multipleDisks(file: path) }
            count = record.le64(32)
            length = record.le64(40)
            offset = record.le64(48)
            limit = recordOffset
        }
        guard offset <= limit, length <= limit - offset else {
            throw ZipArchiveError.directoryOutOfBounds(file: path, offset: offset, length: length, limit: limit)
        }
        guard length <= maximumDirectoryLength else { throw ZipArchiveError.directoryTooLarge(file: path, length: length) }
        // Each record takes at least 46 bytes.
        guard count <= length / 46 else { throw ZipArchiveError.entryCountTooLarge(file: path, count: count, directoryLength: length) }
        return (offset, length, Int(count))
    }

    /// An entry's data, found through its local header (whose sizes a
    /// streaming writer leaves zero: the central record's are used).
    private static func locate(_ record: CentralRecord, in file: ReadableFile, before limit: UInt64) throws -> Entry {
        let path = file.path
        guard record.flags & 1 == 0 else { throw ZipArchiveError.encryptedEntry(file: path, entry: record.name) }
        guard record.method == 0 else { throw ZipArchiveError.compressedEntry(file: path, entry: record.name, method: record.method) }
        guard record.compressedSize == record.size else {
            throw ZipArchiveError.storedSizesDiffer(file: path, entry: record.name, compressed: record.compressedSize, size: record.size)
        }
        guard record.localOffset <= limit, limit - record.localOffset >= 30 else {
            throw ZipArchiveError.entryOutOfBounds(file: path, entry: record.name, start: record.localOffset, end: record.localOffset + 30, limit: limit)
        }
        let header = try file.readBytes(at: record.localOffset, count: 30)
        guard header.le32(0) == localSignature else {
            throw ZipArchiveError.invalidLocalHeader(file: path, entry: record.name, offset: record.localOffset)
        }
        let dataOffset = record.localOffset + 30 + UInt64(header.le16(26)) + UInt64(header.le16(28))
        let (end, overflow) = dataOffset.addingReportingOverflow(record.size)
        guard !overflow, end <= limit else {
            throw ZipArchiveError.entryOutOfBounds(file: path, entry: record.name, start: dataOffset, end: overflow ? .max : end, limit: limit)
        }
        let name = try file.readBytes(at: record.localOffset + 30, count: Int(header.le16(26)))
        guard name == record.nameBytes else { throw ZipArchiveError.invalidLocalHeader(file: path, entry: record.name, offset: record.localOffset) }
        return Entry(name: record.name, dataOffset: dataOffset, length: record.size)
    }
}

/// One record of the central directory, its zip64 extra field applied.
private struct CentralRecord {
    let nameBytes: [UInt8]
    let name: String
    let flags: UInt16
    let method: UInt16
    let compressedSize: UInt64
    let size: UInt64
    let localOffset: UInt64
    /// Where the next record starts.
    let end: Int

    init(_ bytes: [UInt8], at start: Int, index: Int, archive: String, directoryOffset: UInt64) throws {
        guard start <= bytes.count - 46, bytes.le32(start) == ZipArchive.centralSignature else {
            throw ZipArchiveError.invalidDirectoryRecord(file: archive, index: index, offset: directoryOffset + UInt64(start))
        }
        let nameLength = Int(bytes.le16(start + 28)), extraLength = Int(bytes.le16(start + 30)), commentLength = Int(bytes.le16(start + 32))
        end = start + 46 + nameLength + extraLength + commentLength
        guard end <= bytes.count else {
            throw ZipArchiveError.invalidDirectoryRecord(file: archive, index: index, offset: directoryOffset + UInt64(start))
        }
        nameBytes = Array(bytes[(start + 46)..<(start + 46 + nameLength)])
        name = String(decoding: nameBytes, as: UTF8.self)
        flags = bytes.le16(start + 8)
        method = bytes.le16(start + 10)
        var compressed = UInt64(bytes.le32(start + 20)), size = UInt64(bytes.le32(start + 24)), offset = UInt64(bytes.le32(start + 42))
        // zip64: each field that is all ones comes from the 0x0001 extra field, in this order.
        if size == 0xFFFF_FFFF || compressed == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            var wanted: [WritableKeyPath<(UInt64, UInt64, UInt64), UInt64>] = []
            if size == 0xFFFF_FFFF { wanted.append(\.0) }
            if compressed == 0xFFFF_FFFF { wanted.append(\.1) }
            if offset == 0xFFFF_FFFF { wanted.append(\.2) }
            var values = (size, compressed, offset)
            var extra = start + 46 + nameLength
            let extraEnd = extra + extraLength
            var applied = false
            while extra + 4 <= extraEnd {
                let id = bytes.le16(extra), length = Int(bytes.le16(extra + 2))
                guard extra + 4 + length <= extraEnd else { break }
                if id == 1 && length >= wanted.count * 8 {
                    for (i, field) in wanted.enumerated() { values[keyPath: field] = bytes.le64(extra + 4 + i * 8) }
                    applied = true
                    break
                }
                extra += 4 + length
            }
            guard applied else { throw ZipArchiveError.zip64FieldMissing(file: archive, entry: name) }
            (size, compressed, offset) = values
        }
        self.compressedSize = compressed
        self.size = size
        localOffset = offset
    }
}

extension Array where Element == UInt8 {
    /// Little-endian integers at a byte position (bounds checked by the caller).
    func le16(_ i: Int) -> UInt16 { UInt16(self[i]) | UInt16(self[i + 1]) << 8 }
    func le32(_ i: Int) -> UInt32 { UInt32(le16(i)) | UInt32(le16(i + 2)) << 16 }
    func le64(_ i: Int) -> UInt64 { UInt64(le32(i)) | UInt64(le32(i + 4)) << 32 }
}
