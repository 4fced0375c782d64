/// Writes a container by streaming, atomically.
///
/// The header goes first in the file but is only complete at the end (part
/// checksums, the double-quantization offsets and int8 outlier counts are
/// known once a tensor is done). So space for it is reserved up front from a
/// worst-case header, parts are appended at 64-byte aligned offsets while
/// being hashed, and `finish` writes the real header into the reserved space
/// (padded with spaces) and moves the file into place.
public final class ContainerWriter {
    private let output: AtomicOutput
    private let writer: SequentialWriter
    private let reservedHeaderLength: Int
    private let dataStart: UInt64
    private var hasher = XXHash64()
    private var currentPart: ContainerPart?

    /// - Parameters:
    ///   - headerUpperBound: a header at least as long as the final one will
    ///     be (see `ContainerHeader.worstCase`).
    ///   - expectedDataLength: the data section's likely size, to reserve disk space.
    public init(destination: String, overwrite: Bool, inputs: [String], headerUpperBound: ContainerHeader,
                expectedDataLength: UInt64 = 0) throws {
        output = try AtomicOutput(destination: destination, kind: .file, overwrite: overwrite, inputs: inputs)
        writer = try output.makeWriter()
        let bound = headerUpperBound.serialized().count
        dataStart = ContainerFormat.aligned(UInt64(ContainerFormat.prefixLength + bound))
        reservedHeaderLength = Int(dataStart) - ContainerFormat.prefixLength
        writer.preallocate(dataStart + expectedDataLength)
        // Placeholder prefix and header; both are rewritten by finish().
        try writer.writeZeros(Int(dataStart))
    }

    /// Starts a part at the next aligned offset; returns nothing until `endPart`.
    public func beginPart(_ part: ContainerPart) throws {
        precondition(currentPart == nil, "beginPart while another part is open")
        let relative = writer.position - dataStart
        let padding = ContainerFormat.aligned(relative) - relative
        try writer.writeZeros(Int(padding))
        var started = part
        started.offset = writer.position - dataStart
        currentPart = started
        hasher = XXHash64()
    }

    /// Sets aside the next `length` bytes of the open part for positioned
    /// writes from any thread. The part's checksum is not computed from them:
    /// the caller hands the same bytes, in order, to `hash(_:)`.
    public func reserve(_ length: UInt64) throws -> OutputRegion {
        precondition(currentPart != nil, "reserve outside a part")
        return try writer.reserve(length)
    }

    /// Adds bytes written through a reserved region to the open part's checksum, in order.
    public func hash(_ bytes: UnsafeRawBufferPointer) {
        precondition(currentPart != nil, "hash outside a part")
        hasher.update(bytes)
    }

    /// Starts the open part's checksum again: its reserved bytes are about to
    /// be written (and hashed) again (int8's second pass, once the outlier
    /// columns are known).
    public func restartChecksum() {
        precondition(currentPart != nil, "restartChecksum without beginPart")
        hasher = XXHash64()
    }

    /// Appends bytes to the open part.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(currentPart != nil, "write outside a part")
        hasher.update(bytes)
        try writer.write(bytes)
    }

    /// Writes `part` with the `part.expectedLength` bytes of `file` at
    /// `offset` as they are (a raw tensor, an embedded file, a part copied
    /// from another container), read and written on all cores by
    /// `streamBytes` and hashed in order; returns it with its offset and checksum.
    public func copyPart(_ part: ContainerPart, from file: ReadableFile, at offset: UInt64,
                         buffers: ChunkBuffers, threads: Int) throws -> ContainerPart {
        try beginPart(part)
        let length = part.expectedLength
        try streamBytes(of: file, from: offset, length: length, into: try reserve(length), buffers: buffers, threads: threads) { self.hash($0) }
        return try endPart()
    }

    /// Closes the open part and returns it with its offset, length and checksum.
    public func endPart() throws -> ContainerPart {
        guard var part = currentPart else { preconditionFailure("endPart without beginPart") }
        part.length = writer.position - dataStart - part.offset
        part.checksum = hasher.digest()
        precondition(part.length == part.expectedLength, "part \(part.name) has \(part.length) bytes, expected \(part.expectedLength)")
        currentPart = nil
        return part
    }

    /// A whole part in one call.
    public func writePart(_ part: ContainerPart, bytes: UnsafeRawBufferPointer) throws -> ContainerPart {
        try beginPart(part)
        try write(bytes)
        return try endPart()
    }

    /// Writes the final header into its reserved space and moves the container into place.
    public func finish(header: ContainerHeader) throws {
        precondition(currentPart == nil, "finish with a part open")
        try writer.flush()
        var json = header.serialized()
        precondition(json.count <= reservedHeaderLength, "header grew beyond its reservation")
        json += [UInt8](repeating: 0x20, count: reservedHeaderLength - json.count)
        var prefix = ContainerFormat.magic
        withUnsafeBytes(of: ContainerFormat.version.littleEndian) { prefix += $0 }
        withUnsafeBytes(of: UInt32(0).littleEndian) { prefix += $0 }
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix += $0 }
        withUnsafeBytes(of: XXHash64.hash(json).littleEndian) { prefix += $0 }
        try writer.overwrite(at: 0, bytes: prefix + json)
        try writer.close()
        try output.commit()
    }

    /// Removes the partial output.
    public func discard() { output.discard() }
}

extension ContainerHeader {
    /// A header at least as long as any header these tensors can end up with:
    /// every offset and length at its largest, int8 with every column an outlier.
    public static func worstCase(tensors: [(info: TensorInfo, scheme: ContainerScheme, parameters: SchemeParameters)],
                                 files: [ContainerPart], metadata: [(key: String, value: String)]?, provenance: JSONObject) -> ContainerHeader {
        let largeOffset = UInt64(999_999_999_999_999)  // 15 digits: petabytes of data
        func widened(_ part: ContainerPart) -> ContainerPart {
            var part = part
            part.offset = largeOffset
            part.length = largeOffset
            return part
        }
        let entries = tensors.map { tensor -> Tensor in
            var parameters = tensor.parameters
            switch parameters {
            case .fourBit(let blockSize, .some):
                parameters = .fourBit(blockSize: blockSize, offset: -Float.leastNormalMagnitude.nextUp)
            case .int8(_, let rule, _):
                // The longest a Double prints as.
                parameters = .int8(outlierColumnCount: tensor.info.matrixShape.columns, rule: rule, threshold: -2.2250738585072014e-308)
            default:
                break
            }
            let parts = ContainerLayout.parts(for: tensor.info, scheme: tensor.scheme, parameters: parameters).map(widened)
            return Tensor(info: tensor.info, scheme: tensor.scheme, parameters: parameters, parts: parts)
        }
        return ContainerHeader(metadata: metadata, files: files.map(widened), tensors: entries, provenance: provenance)
    }
}
