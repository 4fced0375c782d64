/// A qconv container opened for reading: prefix, header and layout are
/// validated at once; parts are read (and their checksums checked) on demand.
public final class ContainerFile: @unchecked Sendable {
    public let path: String
    public let file: ReadableFile
    public let header: ContainerHeader
    /// Where the data section begins in the file.
    public let dataStart: UInt64
    private let indexByName: [String: Int]

    /// True when the file at `path` starts with the container magic.
    public static func isContainer(path: String) -> Bool {
        guard FileSystem.kind(of: path) == .file, let file = try? ReadableFile(path: path), file.size >= 8,
              let magic = try? file.readBytes(at: 0, count: 8) else { return false }
        return magic == ContainerFormat.magic
    }

    /// Opens the container at `path` and validates everything that does not
    /// need the data: the prefix, the header (its checksum and every rule of
    /// `ContainerHeader.parse`) and the layout of the regions against the file
    /// size. Part checksums are checked when parts are read.
    ///
    /// - Throws: `ContainerError` for an invalid container (exit 3), `IOError`
    ///   when the file cannot be read (exit 4).
    public init(path: String) throws {
        self.path = path
        file = try ReadableFile(path: path)
        guard file.size >= UInt64(ContainerFormat.prefixLength) else { throw ContainerError.fileTooShort(file: path, size: file.size) }
        let prefix = try file.readBytes(at: 0, count: ContainerFormat.prefixLength)
        guard Array(prefix[0..<8]) == ContainerFormat.magic else { throw ContainerError.notAContainer(file: path) }
        let (version, flags, length, headerChecksum) = prefix.withUnsafeBytes { raw in
            (UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
             UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
             UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
             UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }
        guard version == ContainerFormat.version else { throw ContainerError.unsupportedVersion(file: path, version: version) }
        guard flags == 0 else { throw ContainerError.unsupportedFlags(file: path, flags: flags) }
        guard length <= ContainerFormat.maximumHeaderLength else { throw ContainerError.headerTooLarge(file: path, length: length) }
        guard UInt64(ContainerFormat.prefixLength) + length <= file.size else {
            throw ContainerError.headerBeyondEndOfFile(file: path, length: length, fileSize: file.size)
        }
        let json = try file.readBytes(at: UInt64(ContainerFormat.prefixLength), count: Int(length))
        guard XXHash64.hash(json) == headerChecksum else { throw ContainerError.headerChecksumMismatch(file: path) }
        header = try ContainerHeader.parse(json, file: path)
        dataStart = UInt64(ContainerFormat.prefixLength) + length
        guard dataStart % UInt64(ContainerFormat.alignment) == 0 else {
            throw ContainerError.invalidField(file: path, tensor: "", field: "header length", expected: "such that the data section starts at a multiple of 64 (it starts at \(dataStart))")
        }
        try Self.validateLayout(header, dataLength: file.size - dataStart, fileSize: file.size, file: path)
        var index: [String: Int] = [:]
        for (i, tensor) in header.tensors.enumerated() { index[tensor.name] = i }
        indexByName = index
    }

    /// Every tensor, in the container's order.
    public var tensors: [ContainerHeader.Tensor] { header.tensors }

    /// The tensor called `name`, if the container has one.
    public func tensor(named name: String) -> ContainerHeader.Tensor? {
        indexByName[name].map { header.tensors[$0] }
    }

    /// A part's bytes as a `StoredTensor` (name "TENSOR/PART"), for reading through the common paths.
    public func stored(_ part: ContainerPart, of tensor: String) -> StoredTensor {
        StoredTensor(info: TensorInfo(name: "\(tensor)/\(part.name)", dtype: part.dtype, shape: part.shape),
                     file: file, offset: dataStart + part.offset)
    }

    /// Reads a whole (small) part, or an embedded file (`tensor` is then the
    /// file's name), and checks its checksum.
    public func readPart(_ part: ContainerPart, of tensor: String) throws -> [UInt8] {
        let bytes = try file.readBytes(at: dataStart + part.offset, count: Int(part.length))
        let actual = XXHash64.hash(bytes)
        guard actual == part.checksum else { throw checksumError(part, tensor: tensor, actual: actual) }
        return bytes
    }

    /// Streams a part through xxHash64 in bounded chunks and compares with the header.
    public func verifyChecksum(_ part: ContainerPart, of tensor: String, buffer: UnsafeMutableRawBufferPointer) throws {
        var hasher = XXHash64()
        try file.stream(from: dataStart + part.offset, length: part.length, buffer: buffer) { hasher.update($0) }
        let actual = hasher.digest()
        guard actual == part.checksum else { throw checksumError(part, tensor: tensor, actual: actual) }
    }

    /// The error for a part (or an embedded file) whose bytes hash to `actual`.
    func checksumError(_ part: ContainerPart, tensor: String, actual: UInt64) -> ContainerError {
        let expected = ContainerFormat.hexString(part.checksum), found = ContainerFormat.hexString(actual)
        let isTensorPart = self.tensor(named: tensor)?.parts.contains(part) ?? false
        if !isTensorPart && header.files.contains(part) {
            return .embeddedFileChecksumMismatch(file: path, name: part.name, expected: expected, actual: found)
        }
        return .checksumMismatch(file: path, tensor: tensor, part: part.name, expected: expected, actual: found)
    }

    /// Checks every part and embedded file of a container: aligned, inside the
    /// file, in increasing order without overlap, separated by less than the
    /// alignment (padding only), and ending exactly at the end.
    static func validateLayout(_ header: ContainerHeader, dataLength: UInt64, fileSize: UInt64, file: String) throws {
        var regions: [(tensor: String, part: ContainerPart)] = header.files.map { ("(file)", $0) }
        for tensor in header.tensors { regions += tensor.parts.map { (tensor.name, $0) } }
        var previousEnd: UInt64 = 0
        var previous: (tensor: String, part: String) = ("", "")
        for (tensor, part) in regions {
            if part.offset % UInt64(ContainerFormat.alignment) != 0 {
                throw ContainerError.partMisaligned(file: file, tensor: tensor, part: part.name, offset: part.offset)
            }
            if part.offset < previousEnd {
                throw ContainerError.partOverlap(file: file, tensor: tensor, part: part.name, previousTensor: previous.tensor, previousPart: previous.part)
            }
            if part.offset - previousEnd >= UInt64(ContainerFormat.alignment) {
                throw ContainerError.gapTooLarge(file: file, tensor: tensor, part: part.name, gap: part.offset - previousEnd)
            }
            let (end, overflow) = part.offset.addingReportingOverflow(part.length)
            if overflow || end > dataLength {
                throw ContainerError.partBeyondEndOfFile(file: file, tensor: tensor, part: part.name,
                                                         end: overflow ? .max : fileSize - dataLength + end, fileSize: fileSize)
            }
            previousEnd = end
            previous = (tensor, part.name)
        }
        if previousEnd < dataLength {
            throw ContainerError.trailingBytes(file: file, dataEnd: fileSize - dataLength + previousEnd, fileSize: fileSize)
        }
    }
}
