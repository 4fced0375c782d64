/// `verify CONTAINER`: structure (validated on open), every part's and every
/// embedded file's checksum, zero padding between regions, and the contents
/// of every tensor's side parts as the decoder validates them (`SideData`),
/// so that a container that passes can be dequantized.
public enum IntegrityCheck {
    public struct Report {
        public var path: String
        public var tensorCount: Int
        public var partCount: Int
        public var fileCount: Int
        public var bytesChecked: UInt64

        public var json: JSONValue {
            .object(["container": .string(path), "ok": true, "tensor_count": .int(tensorCount), "part_count": .int(partCount),
                     "embedded_file_count": .int(fileCount), "bytes_checked": .uint(bytesChecked)])
        }
    }

    /// Reads the whole data section once (side parts twice: hashed, then decoded).
    public static func check(_ container: ContainerFile) throws -> Report {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var checked: UInt64 = 0
        var previousEnd: UInt64 = 0
        func check(_ region: ContainerRegion, _ bytes: StoredBytes) throws {
            try checkPadding(container, from: previousEnd, to: region.offset, buffer: buffer)
            var hasher = XXHash64()
            try bytes.file.stream(from: bytes.offset, length: bytes.length, buffer: buffer) { hasher.update($0) }
            try bytes.check(hasher.digest())
            checked += region.length
            previousEnd = region.end
        }
        for file in container.header.files { try check(file.region, container.bytes(of: file)) }
        let model = ContainerReader.model(of: container)
        for (tensor, entry) in zip(model.tensors, container.tensors) {
            for (part, region) in zip(tensor.parts, entry.parts) { try check(region.region, part.bytes) }
            _ = try SideData(tensor)
        }
        return Report(path: container.path, tensorCount: container.tensors.count,
                      partCount: container.tensors.reduce(0) { $0 + $1.parts.count },
                      fileCount: container.header.files.count, bytesChecked: checked)
    }

    /// Checks that the data-section bytes `[start, end)` are zero, reading
    /// them in pieces of at most `buffer.count` bytes.
    private static func checkPadding(_ container: ContainerFile, from start: UInt64, to end: UInt64, buffer: UnsafeMutableRawBufferPointer) throws {
        var position = start
        while position < end {
            let count = Int(min(UInt64(buffer.count), end - position))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            try container.file.read(at: container.dataStart + position, into: chunk)
            if let index = chunk.firstIndex(where: { $0 != 0 }) {
                throw ContainerError.paddingNotZero(file: container.path, offset: container.dataStart + position + UInt64(index))
            }
            position += UInt64(count)
        }
    }
}
