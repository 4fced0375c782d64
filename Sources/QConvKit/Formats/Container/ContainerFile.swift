/// A qconv container opened for reading: prefix, header and layout are
/// validated at once; parts are read (and their checksums checked) on demand.
public final class ContainerFile: @unchecked Sendable {
    public let path: String
    public let file: ReadableFile
    public let header: ContainerHeader
    /// Where the data section begins in the file.
    public let dataStart: UInt64
    private let indexByName: [String: Int]
    /// The padding in front of each region (from the end of the one before,
    /// or from the start of the data section), by embedded file and by
    /// tensor and part: checked to be zero whenever the region is read.
    private let filePadding: [String: UInt64]
    private let partPadding: [[UInt64]]

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
        var padding = try Self.validateLayout(header, dataLength: file.size - dataStart, fileSize: file.size, file: path)[...]
        var byFile: [String: UInt64] = [:]
        for embedded in header.files { byFile[embedded.name] = padding.popFirst() }
        filePadding = byFile
        partPadding = header.tensors.map { tensor in tensor.parts.map { _ in padding.popFirst() ?? 0 } }
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

    /// Where a region's bytes are, with the zero padding in front of it and
    /// the error its checksum mismatch raises: every read of the region
    /// checks both (`StoredBytes.check`), whichever command reads it.
    private func bytes(of region: ContainerRegion, padding: UInt64, mismatch: @escaping @Sendable (_ actual: UInt64) -> Error) -> StoredBytes {
        let path = path
        return StoredBytes(file: file, offset: dataStart + region.offset, length: region.length, checksum: region.checksum, padding: padding,
                           mismatch: mismatch, paddingNotZero: { ContainerError.paddingNotZero(file: path, offset: $0) })
    }

    /// A tensor part's bytes, checked against its checksum (and the padding in front of it) when read.
    public func bytes(of part: ContainerPart, tensor: String) -> StoredBytes {
        let path = path, expected = ContainerFormat.hexString(part.checksum), name = part.name.rawValue
        let padding = indexByName[tensor].flatMap { t in header.tensors[t].parts.firstIndex { $0.name == part.name }.map { partPadding[t][$0] } }
        precondition(padding != nil, "\(tensor)/\(name) is not a part of \(path)")
        return bytes(of: part.region, padding: padding ?? 0) { actual in
            ContainerError.checksumMismatch(file: path, tensor: tensor, part: name, expected: expected, actual: ContainerFormat.hexString(actual))
        }
    }

    /// An embedded file's bytes, checked against its checksum (and the padding in front of it) when read.
    public func bytes(of embedded: EmbeddedFile) -> StoredBytes {
        let path = path, expected = ContainerFormat.hexString(embedded.checksum), name = embedded.name
        precondition(filePadding[name] != nil, "\(name) is not embedded in \(path)")
        return bytes(of: embedded.region, padding: filePadding[name] ?? 0) { actual in
            ContainerError.embeddedFileChecksumMismatch(file: path, name: name, expected: expected, actual: ContainerFormat.hexString(actual))
        }
    }

    /// Reads a whole (small) part and checks its checksum.
    public func readPart(_ part: ContainerPart, of tensor: String) throws -> [UInt8] {
        try StoredPart(layout: part.layout, bytes: bytes(of: part, tensor: tensor)).readAll()
    }

    /// Reads a whole embedded file and checks its checksum.
    public func readFile(_ embedded: EmbeddedFile) throws -> [UInt8] {
        try SideFile(name: embedded.name, size: embedded.length, bytes: bytes(of: embedded)).readAll()
    }

    /// Checks every part and embedded file of a container: aligned, inside the
    /// file, in increasing order without overlap, separated by less than the
    /// alignment (padding only), and ending exactly at the end. Returns the
    /// length of the padding in front of each region, in the header's order.
    static func validateLayout(_ header: ContainerHeader, dataLength: UInt64, fileSize: UInt64, file: String) throws -> [UInt64] {
        var regions: [(tensor: String, part: String, region: ContainerRegion)] = header.files.map { ("(file)", $0.name, $0.region) }
        for tensor in header.tensors { regions += tensor.parts.map { (tensor.name, $0.name.rawValue, $0.region) } }
        var previousEnd: UInt64 = 0
        var previous: (tensor: String, part: String) = ("", "")
        var padding: [UInt64] = []
        padding.reserveCapacity(regions.count)
        for (tensor, part, region) in regions {
            if region.offset % UInt64(ContainerFormat.alignment) != 0 {
                throw ContainerError.partMisaligned(file: file, tensor: tensor, part: part, offset: region.offset)
            }
            if region.offset < previousEnd {
                throw ContainerError.partOverlap(file: file, tensor: tensor, part: part, previousTensor: previous.tensor, previousPart: previous.part)
            }
            if region.offset - previousEnd >= UInt64(ContainerFormat.alignment) {
                throw ContainerError.gapTooLarge(file: file, tensor: tensor, part: part, gap: region.offset - previousEnd)
            }
            let (end, overflow) = region.offset.addingReportingOverflow(region.length)
            if overflow || end > dataLength {
                throw ContainerError.partBeyondEndOfFile(file: file, tensor: tensor, part: part,
                                                         end: overflow ? .max : fileSize - dataLength + end, fileSize: fileSize)
            }
            padding.append(region.offset - previousEnd)
            previousEnd = end
            previous = (tensor, part)
        }
        if previousEnd < dataLength {
            throw ContainerError.trailingBytes(file: file, dataEnd: fileSize - dataLength + previousEnd, fileSize: fileSize)
        }
        return padding
    }
}
