/// `verify CONTAINER`: structure (validated on open), every part's and every
/// embedded file's checksum, and zero padding between parts.
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

    public static func check(_ container: ContainerFile) throws -> Report {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var regions: [(tensor: String, part: ContainerPart)] = container.header.files.map { ($0.name, $0) }
        for tensor in container.tensors { regions += tensor.parts.map { (tensor.name, $0) } }
        var checked: UInt64 = 0
        var previousEnd: UInt64 = 0
        for (tensor, part) in regions {
            try checkPadding(container, from: previousEnd, to: part.offset, buffer: buffer)
            try container.verifyChecksum(part, of: tensor, buffer: buffer)
            checked += part.length
            previousEnd = part.offset + part.length
        }
        return Report(path: container.path, tensorCount: container.tensors.count,
                      partCount: container.tensors.reduce(0) { $0 + $1.parts.count },
                      fileCount: container.header.files.count, bytesChecked: checked)
    }

    private static func checkPadding(_ container: ContainerFile, from start: UInt64, to end: UInt64, buffer: UnsafeMutableRawBufferPointer) throws {
        guard end > start else { return }
        let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(end - start)])
        try container.file.read(at: container.dataStart + start, into: chunk)
        if let index = chunk.firstIndex(where: { $0 != 0 }) {
            throw ContainerError.paddingNotZero(file: container.path, offset: container.dataStart + start + UInt64(index))
        }
    }
}
