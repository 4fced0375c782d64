/// A safetensors file opened for reading: the header is read and validated at
/// once; tensor data is read on demand, one range at a time.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let header: SafeTensorsHeader
    public let file: ReadableFile
    private let indexByName: [String: Int]

    /// Opens `path` and validates its header; reads no tensor data.
    public init(path: String) throws {
        self.path = path
        file = try ReadableFile(path: path)
        guard file.size >= 8 else { throw SafeTensorsError.fileTooShort(file: path, size: file.size) }
        let prefix = try file.readBytes(at: 0, count: 8)
        let length = prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard length <= SafeTensorsHeader.maximumHeaderLength else {
            throw SafeTensorsError.headerTooLarge(file: path, length: length)
        }
        guard length + 8 <= file.size else {
            throw SafeTensorsError.headerBeyondEndOfFile(file: path, length: length, fileSize: file.size)
        }
        let json = try file.readBytes(at: 8, count: Int(length))
        header = try SafeTensorsHeader.parse(json: json, headerLength: length, fileSize: file.size, file: path)
        var index: [String: Int] = [:]
        for (i, entry) in header.tensors.enumerated() { index[entry.name] = i }
        indexByName = index
    }

    /// The tensors in data order.
    public var tensors: [SafeTensorsHeader.Entry] { header.tensors }

    public func entry(named name: String) -> SafeTensorsHeader.Entry? {
        indexByName[name].map { header.tensors[$0] }
    }

    /// Reads `buffer.count` bytes of `entry`'s data, starting `offset` bytes into the tensor.
    public func read(_ entry: SafeTensorsHeader.Entry, at offset: Int = 0, into buffer: UnsafeMutableRawBufferPointer) throws {
        precondition(offset >= 0 && UInt64(offset + buffer.count) <= UInt64(entry.info.byteCount), "read outside tensor \(entry.name)")
        try file.read(at: header.dataStart + entry.dataOffsets.lowerBound + UInt64(offset), into: buffer)
    }

    /// A whole tensor's bytes (for small tensors: adapters, biases, tests).
    public func bytes(of entry: SafeTensorsHeader.Entry) throws -> [UInt8] {
        try file.readBytes(at: header.dataStart + entry.dataOffsets.lowerBound, count: entry.info.byteCount)
    }
}
