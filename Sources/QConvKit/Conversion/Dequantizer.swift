/// `dequant`: a container back to a safetensors checkpoint with the original
/// names, shapes, order and metadata.
public enum Dequantizer {
    public struct Options {
        /// Output dtype of float tensors; nil keeps each tensor's source dtype.
        public var dtype: DType?
        /// Shard the output folder at this many bytes.
        public var maxShardSize: UInt64?
        public var threads: Int
        public var overwrite: Bool
        public var quiet: Bool

        public init(dtype: DType? = nil, maxShardSize: UInt64? = nil, threads: Int = defaultThreadCount, overwrite: Bool = false, quiet: Bool = true) {
            self.dtype = dtype
            self.maxShardSize = maxShardSize
            self.threads = threads
            self.overwrite = overwrite
            self.quiet = quiet
        }
    }

    public struct Report {
        public var input: String
        public var output: String
        /// "file" or "folder".
        public var layout: String
        public var files: [String]
        public var tensors: [TensorInfo]
        public var outputBytes: UInt64
        public var seconds: Double

        public var json: JSONValue {
            .object([
                "command": "dequant", "input": .string(input), "output": .string(output), "layout": .string(layout),
                "files": .array(files.map { .string($0) }), "tensor_count": .int(tensors.count),
                "parameter_count": .int(tensors.reduce(0) { $0 + $1.elementCount }),
                "output_bytes": .uint(outputBytes), "seconds": .double((seconds * 1000).rounded() / 1000),
            ])
        }
    }

    /// The dtype a tensor is written in.
    static func outputDType(_ tensor: ContainerHeader.Tensor, requested: DType?) -> DType {
        let source = tensor.info.dtype
        guard source.isDecodableToFloat else { return source }
        let wanted = requested ?? source
        if tensor.scheme == .raw && requested == nil { return source }
        return wanted.isEncodableFromFloat ? wanted : .f32
    }

    /// Writes `container` as safetensors at `destination`: a single file when
    /// it ends in `.safetensors` (and no shard size is given), otherwise a model
    /// folder with the embedded files (config.json, ...) restored.
    ///
    /// - Parameter transform: changes some tensors on the way (merge-lora).
    public static func dequantize(_ container: ContainerFile, to destination: String, options: Options,
                                  transform: TensorTransform? = nil) throws -> Report {
        let started = monotonicSeconds()
        // What the transform makes of each tensor (nil: left as it is).
        let changes = container.tensors.map { transform?.output(for: $0.info) }
        let outputs = zip(container.tensors, changes).map { tensor, changed -> TensorInfo in
            let dtype = changed.map { options.dtype ?? $0.dtype } ?? outputDType(tensor, requested: options.dtype)
            return TensorInfo(name: tensor.name, dtype: dtype, shape: changed?.shape ?? tensor.info.shape)
        }
        let asFile = destination.hasSuffix(".safetensors") && options.maxShardSize == nil
        let layout: CheckpointWriter.Layout = asFile ? .file
            : .folder(shards: CheckpointWriter.planShards(outputs, maximumBytes: options.maxShardSize ?? .max))
        let writer = try CheckpointWriter(destination: destination, layout: layout, tensors: outputs,
                                          metadata: container.header.metadata, overwrite: options.overwrite,
                                          inputs: [container.path] + (transform?.inputFiles ?? []))
        let buffers = TensorEncoding.makeBuffers(threads: options.threads)
        let checkBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SequentialWriter.bufferSize, alignment: 64)
        defer { checkBuffer.deallocate() }
        let progress = Progress(label: "dequant", total: outputs.reduce(0) { $0 + UInt64($1.byteCount) }, quiet: options.quiet)
        defer { progress.finish() }
        do {
            if !asFile {
                for file in container.header.files {
                    try writer.addFile(named: file.name, bytes: try container.readPart(file, of: file.name))
                }
            }
            for (index, (tensor, output)) in zip(container.tensors, outputs).enumerated() {
                let changed = changes[index] != nil
                if tensor.scheme == .raw && output.dtype == tensor.info.dtype && !changed {
                    try copyChecked(tensor, of: container, into: writer, buffers: buffers, threads: options.threads)
                } else {
                    // A tensor written as it is decoded has its checksum checked on the way.
                    let decoder = try ContainerTensorDecoder(container: container, tensor: tensor, buffer: checkBuffer, checkingInOrder: !changed)
                    var source: FloatTensorSource = decoder
                    if changed, let transform {
                        // The base as `dequant` writes it in its own dtype; the merged
                        // values are then rounded once, to the output dtype.
                        source = try transform.values(for: tensor.info, base: DTypeRoundedSource(source, through: tensor.info.dtype), threads: options.threads)
                    }
                    let nonFinite = try TensorEncoding.write(source, as: output.dtype, into: try writer.reserve(UInt64(output.byteCount)),
                                                             buffers: buffers, threads: options.threads,
                                                             consumed: { try decoder.checkBytes(before: $0, buffer: checkBuffer) })
                    try decoder.finishChecks(buffer: checkBuffer)
                    if changed, nonFinite > 0, let transform, !transform.allowsNonFinite {
                        throw transform.nonFiniteError(tensor: tensor.name, count: nonFinite)
                    }
                }
                progress.advance(by: UInt64(output.byteCount), item: tensor.name)
            }
            try writer.commit()
        } catch {
            writer.discard()
            throw error
        }
        let files = asFile ? [FileSystem.baseName(of: destination)] : try FileSystem.contents(of: destination)
        let bytes = asFile ? (FileSystem.size(of: destination) ?? 0)
            : files.reduce(0) { $0 + (FileSystem.size(of: FileSystem.join(destination, $1)) ?? 0) }
        return Report(input: container.path, output: destination, layout: asFile ? "file" : "folder", files: files,
                      tensors: outputs, outputBytes: bytes, seconds: monotonicSeconds() - started)
    }

    /// Copies a raw part, checking its checksum on the way.
    static func copyChecked(_ tensor: ContainerHeader.Tensor, of container: ContainerFile, into writer: CheckpointWriter,
                            buffers: ChunkBuffers, threads: Int) throws {
        let part = tensor.parts[0]
        var hasher = XXHash64()
        try streamBytes(of: container.file, from: container.dataStart + part.offset, length: part.length,
                        into: try writer.reserve(part.length), buffers: buffers, threads: threads) { hasher.update($0) }
        let actual = hasher.digest()
        guard actual == part.checksum else { throw container.checksumError(part, tensor: tensor.name, actual: actual) }
    }
}
