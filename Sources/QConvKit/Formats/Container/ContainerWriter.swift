/// Writes a container file by streaming, atomically: the byte-level half of
/// `ContainerModelWriter`.
///
/// The header goes first in the file but is only complete at the end (region
/// checksums, the double-quantization offsets and int8 outlier counts are
/// known once a tensor is done). So space for it is reserved up front from a
/// worst-case header, regions are appended at 64-byte aligned offsets while
/// being hashed, and `finish` writes the real header into the reserved space
/// (padded with spaces) and moves the file into place.
public final class ContainerWriter {
    private let output: AtomicOutput
    private let writer: SequentialWriter
    private let reservedHeaderLength: Int
    private let dataStart: UInt64
    private var hasher = XXHash64()
    /// The open region's offset and expected length.
    private var open: (offset: UInt64, length: UInt64)?

    /// - Parameters:
    ///   - headerUpperBound: a header at least as long as the final one will
    ///     be (see `ContainerHeader.worstCase`).
    ///   - expectedDataLength: the data section's likely size, to reserve disk space.
    public init(destination: String, overwrite: Bool, inputs: [String], headerUpperBound: ContainerHeader,
                expectedDataLength: UInt64 = 0) throws {
        output = try AtomicOutput(destination: destination, kind: .file, overwrite: overwrite, inputs: inputs)
        writer = try output.makeWriter()
        let bound = headerUpperBound.serializedLength
        dataStart = ContainerFormat.aligned(UInt64(ContainerFormat.prefixLength + bound))
        reservedHeaderLength = Int(dataStart) - ContainerFormat.prefixLength
        writer.preallocate(dataStart + expectedDataLength)
        // Placeholder prefix and header; both are rewritten by finish().
        try writer.writeZeros(Int(dataStart))
    }

    /// Starts a region of `length` bytes at the next aligned offset.
    public func beginRegion(length: UInt64) throws {
        precondition(open == nil, "beginRegion while another region is open")
        let relative = writer.position - dataStart
        let padding = ContainerFormat.aligned(relative) - relative
        try writer.writeZeros(Int(padding))
        open = (writer.position - dataStart, length)
        hasher = XXHash64()
    }

    /// Sets aside the next `length` bytes of the open region for positioned
    /// writes from any thread. The region's checksum is not computed from
    /// them: the caller hands the same bytes, in order, to `hash(_:)`.
    public func reserve(_ length: UInt64) throws -> OutputRegion {
        precondition(open != nil, "reserve outside a region")
        return try writer.reserve(length)
    }

    /// Adds bytes written through a reserved region to the open region's checksum, in order.
    public func hash(_ bytes: UnsafeRawBufferPointer) {
        precondition(open != nil, "hash outside a region")
        hasher.update(bytes)
    }

    /// Starts the open region's checksum again: its reserved bytes are about
    /// to be written (and hashed) again (int8's second pass, once the outlier
    /// columns are known).
    public func restartChecksum() {
        precondition(open != nil, "restartChecksum outside a region")
        hasher = XXHash64()
    }

    /// Appends bytes to the open region.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(open != nil, "write outside a region")
        hasher.update(bytes)
        try writer.write(bytes)
    }

    /// Closes the open region and returns where it is and its checksum.
    public func endRegion() throws -> ContainerRegion {
        guard let (offset, expected) = open else { preconditionFailure("endRegion without beginRegion") }
        let region = ContainerRegion(offset: offset, length: writer.position - dataStart - offset, checksum: hasher.digest())
        precondition(region.length == expected, "region has \(region.length) bytes, expected \(expected)")
        open = nil
        return region
    }

    /// A whole region in one call.
    public func writeRegion(_ bytes: UnsafeRawBufferPointer) throws -> ContainerRegion {
        try beginRegion(length: UInt64(bytes.count))
        try write(bytes)
        return try endRegion()
    }

    /// A region with the `length` bytes of `file` at `offset` as they are (a
    /// raw tensor, an embedded file, a part copied from another container),
    /// read and written on all cores by `streamBytes` and hashed in order.
    public func copyRegion(from file: ReadableFile, at offset: UInt64, length: UInt64,
                           buffers: ChunkBuffers, threads: Int) throws -> ContainerRegion {
        try beginRegion(length: length)
        try streamBytes(of: file, from: offset, length: length, into: try reserve(length), buffers: buffers, threads: threads) { self.hash($0) }
        return try endRegion()
    }

    /// Writes the final header into its reserved space and moves the container into place.
    public func finish(header: ContainerHeader) throws {
        precondition(open == nil, "finish with a region open")
        try writer.flush()
        // The JSON is hashed and written piece by piece, then its padding (a
        // large model's header is tens of megabytes: it is never held whole).
        var hasher = XXHash64()
        var written = 0, pending: [UInt8] = []
        func write(_ bytes: [UInt8], last: Bool = false) throws {
            precondition(written + pending.count + bytes.count <= reservedHeaderLength, "header grew beyond its reservation")
            bytes.withUnsafeBytes { hasher.update($0) }
            pending += bytes
            guard last || pending.count >= 1 << 20 else { return }
            try writer.overwrite(at: UInt64(ContainerFormat.prefixLength + written), bytes: pending)
            written += pending.count
            pending.removeAll(keepingCapacity: true)
        }
        try header.serialize { try write($0) }
        try write([UInt8](repeating: 0x20, count: reservedHeaderLength - written - pending.count), last: true)
        var prefix = ContainerFormat.magic
        withUnsafeBytes(of: ContainerFormat.version.littleEndian) { prefix += $0 }
        withUnsafeBytes(of: UInt32(0).littleEndian) { prefix += $0 }
        withUnsafeBytes(of: UInt64(reservedHeaderLength).littleEndian) { prefix += $0 }
        withUnsafeBytes(of: hasher.digest().littleEndian) { prefix += $0 }
        try writer.overwrite(at: 0, bytes: prefix)
        try writer.close()
        try output.commit()
    }

    /// Removes the partial output.
    public func discard() { output.discard() }
}

extension ContainerHeader {
    /// A header at least as long as any header these tensors can end up with:
    /// every offset and length at its largest, double-quantization offsets
    /// at their longest, int8 with every column an outlier.
    public static func worstCase(tensors: [(info: TensorInfo, scheme: TensorScheme)], fileNames: [String],
                                 metadata: [(key: String, value: String)]?, provenance: JSONObject) -> ContainerHeader {
        let large = ContainerRegion(offset: 999_999_999_999_999, length: 999_999_999_999_999, checksum: 0)  // 15 digits: petabytes
        let entries = tensors.map { tensor -> Tensor in
            let scheme: TensorScheme
            switch tensor.scheme {
            case .raw:
                scheme = .raw
            case .strided, .scaledFP8:
                preconditionFailure("\(tensor.info.name): a container never holds a strided view or FP8 weights (copies write them raw)")
            case .fourBit(var p):
                if case .doubleQuantized = p.blockScales { p.blockScales = .doubleQuantized(offset: -Float.leastNormalMagnitude.nextUp) }
                scheme = .fourBit(p)
            case .int8(var p):
                p.outlierColumnCount = tensor.info.matrixShape.columns
                p.outlierThreshold = -2.2250738585072014e-308  // the longest a Double prints as
                scheme = .int8(p)
            }
            return Tensor(info: tensor.info, scheme: scheme, parts: scheme.parts(for: tensor.info).map { ContainerPart(layout: $0, region: large) })
        }
        return ContainerHeader(metadata: metadata, files: fileNames.map { EmbeddedFile(name: $0, region: large) }, tensors: entries, provenance: provenance)
    }
}
