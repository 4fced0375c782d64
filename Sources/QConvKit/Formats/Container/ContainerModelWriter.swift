/// Writes a qconv container as a `ModelWriter`: side files embedded first,
/// then each tensor's parts as regions, then the header (docs/FORMAT.md).
public final class ContainerModelWriter: ModelWriter {
    private let writer: ContainerWriter
    private let context: EncodingContext
    private let metadata: [(key: String, value: String)]?
    private let provenance: JSONObject
    private var files: [EmbeddedFile] = []
    private var entries: [ContainerHeader.Tensor] = []

    /// Creates the temporary output and embeds the side files.
    ///
    /// - Parameters:
    ///   - tensors: every tensor in order, with the scheme planned for it
    ///     (`TensorEncoder.plannedScheme`), from which the header's room is reserved.
    ///   - provenance: the header's free-form members (qconv version, options, source).
    ///   - inputs: paths the conversion reads, which the destination must not be.
    public init(destination: String, overwrite: Bool, inputs: [String], tensors: [(info: TensorInfo, scheme: TensorScheme)],
                sideFiles: [SideFile], metadata: [(key: String, value: String)]?, provenance: JSONObject, context: EncodingContext) throws {
        self.context = context
        self.metadata = metadata
        self.provenance = provenance
        let upperBound = ContainerHeader.worstCase(tensors: tensors, fileNames: sideFiles.map(\.name), metadata: metadata, provenance: provenance)
        // Exact for raw and 4-bit tensors; int8 tensors counted without outlier columns.
        let expectedData = tensors.reduce(UInt64(0)) { total, tensor in
            total + tensor.scheme.parts(for: tensor.info).reduce(0) { $0 + ContainerFormat.aligned($1.byteCount) }
        } + sideFiles.reduce(0) { $0 + ContainerFormat.aligned($1.size) }
        writer = try ContainerWriter(destination: destination, overwrite: overwrite, inputs: inputs, headerUpperBound: upperBound,
                                     expectedDataLength: expectedData)
        do {
            for file in sideFiles {
                switch file.contents {
                case .stored(let bytes):
                    let region = try writer.copyRegion(from: bytes.file, at: bytes.offset, length: bytes.length,
                                                       buffers: context.copyBuffers, threads: context.threads)
                    try bytes.check(region.checksum)
                    files.append(EmbeddedFile(name: file.name, region: region))
                case .generated(let bytes):
                    files.append(EmbeddedFile(name: file.name, region: try bytes.withUnsafeBytes { try writer.writeRegion($0) }))
                }
            }
        } catch {
            writer.discard()
            throw error
        }
    }

    public func writeTensor(_ tensor: TensorInfo, _ encode: (PartSink) throws -> TensorScheme) throws {
        let sink = ContainerPartSink(writer: writer, context: context)
        let scheme = try encode(sink)
        let layouts = scheme.parts(for: tensor)
        precondition(sink.regions.count == layouts.count, "\(tensor.name): \(sink.regions.count) parts written, \(layouts.count) expected")
        entries.append(ContainerHeader.Tensor(info: tensor, scheme: scheme, parts: zip(layouts, sink.regions).map { ContainerPart(layout: $0, region: $1) }))
    }

    public func commit() throws {
        try writer.finish(header: ContainerHeader(metadata: metadata, files: files, tensors: entries, provenance: provenance))
    }

    public func discard() { writer.discard() }

    /// The tensors written so far, as the header lists them.
    public var writtenTensors: [ContainerHeader.Tensor] { entries }

    /// The names of the embedded files.
    public var embeddedFileNames: [String] { files.map(\.name) }
}

/// A tensor's parts as regions of the container, each hashed on the way.
private final class ContainerPartSink: PartSink {
    let writer: ContainerWriter
    let context: EncodingContext
    private(set) var regions: [ContainerRegion] = []

    init(writer: ContainerWriter, context: EncodingContext) {
        self.writer = writer
        self.context = context
    }

    func reserve(_ part: PartLayout) throws -> OutputRegion {
        try writer.beginRegion(length: part.byteCount)
        return try writer.reserve(part.byteCount)
    }

    var needsBytesInOrder: Bool { true }
    func hashInOrder(_ bytes: UnsafeRawBufferPointer) { writer.hash(bytes) }
    func restartReserved() { writer.restartChecksum() }
    func endReserved() throws { regions.append(try writer.endRegion()) }

    func write(_ part: PartLayout, bytes: UnsafeRawBufferPointer) throws {
        precondition(UInt64(bytes.count) == part.byteCount, "\(part.name.rawValue): \(bytes.count) bytes for \(part.byteCount)")
        regions.append(try writer.writeRegion(bytes))
    }

    /// Copied on all cores and hashed in order; a part with a checksum must still have it.
    func copy(_ part: StoredPart, context: EncodingContext) throws {
        let region = try writer.copyRegion(from: part.bytes.file, at: part.bytes.offset, length: part.bytes.length,
                                           buffers: context.copyBuffers, threads: context.threads)
        try part.bytes.check(region.checksum)
        regions.append(region)
    }
}
