/// Writes a zip archive of stored (uncompressed) entries front to back, as
/// torch's writer lays one out: each entry's data 64-byte aligned (padding in
/// an extra field), zip64 records at the end (and per entry when a size or
/// an offset needs 64 bits). What `TorchCheckpointWriter` writes checkpoints with.
public final class StoredZipWriter {
    private let output: SequentialWriter
    private var directory: [UInt8] = []
    private var count = 0

    public init(output: SequentialWriter) {
        self.output = output
    }

    /// Adds an entry of `length` bytes, which `contents` hands to the writer
    /// it is given, in order.
    public func add(_ name: String, length: UInt64, contents: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let nameBytes = Array(name.utf8)
        let headerOffset = output.position
        let large = length >= 0xFFFF_FFFF
        // Local header: signature, version, flags, method, time, date, CRC (patched below), sizes, name and extra lengths.
        var zip64Extra: [UInt8] = []
        if large { zip64Extra = le(UInt16(1), 2) + le(UInt16(16), 2) + le(length, 8) + le(length, 8) }
        let unpadded = headerOffset + 30 + UInt64(nameBytes.count) + UInt64(zip64Extra.count) + 4
        let padding = Int((64 - unpadded % 64) % 64)
        let extra = zip64Extra + le(UInt16(0x4246), 2) + le(UInt16(padding), 2) + [UInt8](repeating: 0x5A, count: padding)
        let size32 = large ? UInt64(0xFFFF_FFFF) : length
        func header(crc: UInt32) -> [UInt8] {
            le(UInt32(0x0403_4B50), 4) + le(UInt16(45), 2) + le(UInt16(0x0800), 2) + le(UInt16(0), 2) + le(UInt32(0), 4)
                + le(crc, 4) + le(size32, 4) + le(size32, 4) + le(UInt16(nameBytes.count), 2) + le(UInt16(extra.count), 2) + nameBytes + extra
        }
        try output.write(header(crc: 0))
        var crc = CRC32()
        var written: UInt64 = 0
        try contents { bytes in
            crc.update(bytes)
            written += UInt64(bytes.count)
            try output.write(bytes)
        }
        precondition(written == length, "\(name): \(written) bytes written for \(length)")
        try output.overwrite(at: headerOffset, bytes: header(crc: crc.value))
        addDirectoryRecord(nameBytes, crc: crc.value, length: length, headerOffset: headerOffset)
    }

    /// Adds a small entry.
    public func add(_ name: String, bytes: [UInt8]) throws {
        try add(name, length: UInt64(bytes.count)) { write in try bytes.withUnsafeBytes { try write($0) } }
    }

    private func addDirectoryRecord(_ name: [UInt8], crc: UInt32, length: UInt64, headerOffset: UInt64) {
        var zip64: [UInt8] = []
        if length >= 0xFFFF_FFFF { zip64 += le(length, 8) + le(length, 8) }
        if headerOffset >= 0xFFFF_FFFF { zip64 += le(headerOffset, 8) }
        let extra = zip64.isEmpty ? [] : le(UInt16(1), 2) + le(UInt16(zip64.count), 2) + zip64
        let size32 = length >= 0xFFFF_FFFF ? UInt64(0xFFFF_FFFF) : length
        directory += le(UInt32(0x0201_4B50), 4) + le(UInt16(0x031E), 2) + le(UInt16(45), 2) + le(UInt16(0x0800), 2) + le(UInt16(0), 2)
            + le(UInt32(0), 4) + le(crc, 4) + le(size32, 4) + le(size32, 4) + le(UInt16(name.count), 2) + le(UInt16(extra.count), 2)
            + le(UInt16(0), 2) + le(UInt16(0), 2) + le(UInt16(0), 2) + le(UInt32(0o100644 << 16), 4)
            + le(min(headerOffset, 0xFFFF_FFFF), 4) + name + extra
        count += 1
    }

    /// Writes the central directory and the end records, and closes the file.
    public func finish() throws {
        let directoryOffset = output.position
        try output.write(directory)
        let zip64Offset = output.position
        let entries = UInt64(count), length = UInt64(directory.count)
        try output.write(le(UInt32(0x0606_4B50), 4) + le(UInt64(44), 8) + le(UInt16(0x031E), 2) + le(UInt16(45), 2) + le(UInt32(0), 4)
                         + le(UInt32(0), 4) + le(entries, 8) + le(entries, 8) + le(length, 8) + le(directoryOffset, 8))
        try output.write(le(UInt32(0x0706_4B50), 4) + le(UInt32(0), 4) + le(zip64Offset, 8) + le(UInt32(1), 4))
        try output.write(le(UInt32(0x0605_4B50), 4) + le(UInt16(0), 2) + le(UInt16(0), 2) + le(min(entries, 0xFFFF), 2) + le(min(entries, 0xFFFF), 2)
                         + le(min(length, 0xFFFF_FFFF), 4) + le(min(directoryOffset, 0xFFFF_FFFF), 4) + le(UInt16(0), 2))
        try output.close()
    }
}

/// `count` little-endian bytes of `value`.
func le<T: FixedWidthInteger>(_ value: T, _ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: UInt64(value) >> (8 * $0)) }
}

/// The CRC-32 zip archives record for each entry (reflected polynomial 0xEDB88320).
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        (0..<8).reduce(UInt32(n)) { c, _ in c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }
    private var state: UInt32 = 0xFFFF_FFFF

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        Self.table.withUnsafeBufferPointer { table in
            var c = state
            for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
            state = c
        }
    }

    var value: UInt32 { state ^ 0xFFFF_FFFF }
}
