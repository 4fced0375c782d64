/// `verify CONTAINER`: structure (validated on open), every part's and every
/// embedded file's checksum and the zero padding in front of it (checked by
/// `StoredBytes.check`, as every command that reads a region does), and the contents
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
        // `check` tests the checksum and the padding in front of the region, as every reader does.
        func check(_ region: ContainerRegion, _ bytes: StoredBytes) throws {
            var hasher = XXHash64()
            try bytes.file.stream(from: bytes.offset, length: bytes.length, buffer: buffer) { hasher.update($0) }
            try bytes.check(hasher.digest())
            checked += region.length
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
}
