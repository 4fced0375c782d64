/// Writes a new container from an existing one with some tensors changed by
/// a `TensorTransform` (merge-lora into a quantized base, QLoRA's
/// "dequantize, add, quantize").
///
/// Changed tensors are decoded, transformed and quantized again with the
/// scheme and parameters they had (a raw tensor is stored raw again, in its
/// new dtype). Every other part and embedded file is copied byte for byte,
/// its checksum checked on the way.
public enum ContainerRewriter {
    public struct Options {
        public var threads: Int
        public var overwrite: Bool
        public var quiet: Bool
        /// Recorded in the new header's provenance.
        public var note: JSONObject

        public init(threads: Int = defaultThreadCount, overwrite: Bool = false, quiet: Bool = true, note: JSONObject = JSONObject()) {
            self.threads = threads
            self.overwrite = overwrite
            self.quiet = quiet
            self.note = note
        }
    }

    /// The method that stores a tensor of `container` again as it was stored (nil for raw).
    ///
    /// - Throws: `ContainerError.unknownOutlierRule` for an int8 tensor whose
    ///   rule cannot be read (never re-quantized with a guessed rule).
    public static func method(for tensor: ContainerHeader.Tensor, in container: ContainerFile) throws -> QuantizationMethod? {
        switch (tensor.scheme, tensor.parameters) {
        case let (scheme, .fourBit(blockSize, offset)):
            guard let format = scheme.fourBitFormat else { return nil }
            return .fourBit(format, blockSize: blockSize, doubleQuant: offset != nil)
        case let (.int8, .int8(_, rule, _)):
            return .int8(outliers: try ContainerHeader.outlierCriterion(rule, file: container.path, tensor: tensor.name))
        default: return nil
        }
    }

    public static func rewrite(_ container: ContainerFile, to destination: String, transform: TensorTransform, options: Options) throws -> [ContainerHeader.Tensor] {
        let planned = container.tensors.map { tensor -> (tensor: ContainerHeader.Tensor, output: TensorInfo?) in
            (tensor, transform.output(for: tensor.info))
        }
        var provenance = container.header.provenance
        provenance.members.removeAll { $0.key == "qconv_version" }
        provenance.members.insert(("qconv_version", .string(QConvVersion.string)), at: 0)
        for member in options.note.members { provenance.append(member.key, member.value) }
        let upperBound = ContainerHeader.worstCase(
            tensors: planned.map { entry in
                guard let output = entry.output else { return (entry.tensor.info, entry.tensor.scheme, entry.tensor.parameters) }
                return (output, entry.tensor.scheme, entry.tensor.parameters)
            },
            files: container.header.files, metadata: container.header.metadata, provenance: provenance)
        let writer = try ContainerWriter(destination: destination, overwrite: options.overwrite,
                                         inputs: [container.path] + transform.inputFiles, headerUpperBound: upperBound,
                                         expectedDataLength: container.file.size - container.dataStart)
        let progress = Progress(label: "merging", total: container.file.size, quiet: options.quiet)
        defer { progress.finish() }
        do {
            let buffers = Quantizer.makeBuffers(threads: options.threads)
            let encodeBuffers = TensorEncoding.makeBuffers(threads: options.threads)
            var files: [ContainerPart] = []
            for file in container.header.files {
                files.append(try copy(file, of: file.name, from: container, into: writer, buffers: buffers, threads: options.threads))
            }
            var entries: [ContainerHeader.Tensor] = []
            for (tensor, output) in planned {
                guard let output else {
                    var copied = tensor
                    copied.parts = try tensor.parts.map { try copy($0, of: tensor.name, from: container, into: writer, buffers: buffers, threads: options.threads) }
                    entries.append(copied)
                    progress.advance(by: tensor.storedBytes, item: tensor.name)
                    continue
                }
                let method = try method(for: tensor, in: container)
                let decoder = try ContainerTensorDecoder(container: container, tensor: tensor, buffer: buffers.bytes(0))
                // Start from the values `dequant` writes and quantize the ones a
                // merge writes: both in the tensor's dtype (see DTypeRoundedSource).
                let values = DTypeRoundedSource(
                    try transform.values(for: tensor.info, base: DTypeRoundedSource(decoder, through: tensor.info.dtype), threads: options.threads),
                    through: output.dtype)
                if let method {
                    entries.append(try Quantizer.quantize(values, file: container.path, method: method, writer: writer, buffers: buffers,
                                                          threads: options.threads, allowNonfinite: transform.allowsNonFinite))
                } else {
                    let part = ContainerPart(name: "data", dtype: output.dtype, shape: output.shape)
                    try writer.beginPart(part)
                    let nonFinite = try TensorEncoding.write(values, as: output.dtype, into: try writer.reserve(UInt64(output.byteCount)),
                                                             buffers: encodeBuffers, threads: options.threads, inOrder: { writer.hash($0) })
                    if nonFinite > 0 && !transform.allowsNonFinite { throw transform.nonFiniteError(tensor: tensor.name, count: nonFinite) }
                    entries.append(ContainerHeader.Tensor(info: output, scheme: .raw, parameters: .raw, parts: [try writer.endPart()]))
                }
                progress.advance(by: tensor.storedBytes, item: tensor.name)
            }
            try writer.finish(header: ContainerHeader(metadata: container.header.metadata, files: files, tensors: entries, provenance: provenance))
            return entries
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Copies a part as it is, checking that it still has its checksum.
    static func copy(_ part: ContainerPart, of tensor: String, from container: ContainerFile, into writer: ContainerWriter,
                     buffers: ChunkBuffers, threads: Int) throws -> ContainerPart {
        let copied = try writer.copyPart(part, from: container.file, at: container.dataStart + part.offset, buffers: buffers, threads: threads)
        guard copied.checksum == part.checksum else { throw container.checksumError(part, tensor: tensor, actual: copied.checksum) }
        return copied
    }
}
