/// Writes a model again in its own format with some tensors changed by a
/// `TensorTransform` (merge-lora into any base; into a quantized one it is
/// QLoRA's "dequantize, add, quantize").
///
/// Changed tensors are decoded, transformed and stored again with the scheme
/// and parameters they had (a quantized tensor is quantized again by the
/// same method; a raw one is written in its new dtype). Every other tensor,
/// and every side file, is copied byte for byte, its checksum checked on the way.
public enum ModelRewriter {
    public struct Options {
        public var threads: Int
        public var overwrite: Bool
        /// A container records it in its provenance (what was merged).
        public var note: JSONObject
        public var progress: ProgressHandler?
        /// A folder output: shards of at most this many bytes (transformers' rule) instead of the model's own shards.
        public var maxShardSize: UInt64?
        /// A folder output: write only this part's shards.
        public var part: OutputPart?

        public init(threads: Int = defaultThreadCount, overwrite: Bool = false, note: JSONObject = JSONObject(), progress: ProgressHandler? = nil,
                    maxShardSize: UInt64? = nil, part: OutputPart? = nil) {
            self.threads = threads
            self.overwrite = overwrite
            self.note = note
            self.progress = progress
            self.maxShardSize = maxShardSize
            self.part = part
        }
    }

    /// What each tensor of `model` becomes.
    static func plan(_ model: Model, transform: TensorTransform, threads: Int) -> [ConversionStep] {
        model.tensors.map { tensor in
            guard let output = transform.output(for: tensor.info) else { return .copy(tensor) }
            guard let method = tensor.scheme.method else {
                return ConversionStep(source: tensor, output: output, action: .encode(FloatEncoder(dtype: output.dtype), values: {
                    try transform.transformedValues(of: tensor, threads: threads)
                }), allowNonfinite: transform.allowsNonFinite)
            }
            // The merged values as a merge writes them, in the tensor's dtype, quantized again.
            // bitsandbytes' own offsets in its layout, qconv's in a container.
            let encoder: TensorEncoder
            if case .bitsandbytes = model.format { encoder = method.encoder(mean: .torchFloat32) } else { encoder = method.encoder }
            return ConversionStep(source: tensor, output: output, action: .encode(encoder, values: {
                DTypeRoundedSource(try transform.transformedValues(of: tensor, threads: threads), through: output.dtype)
            }), allowNonfinite: transform.allowsNonFinite)
        }
    }

    /// Rewrites `model` at `destination`; returns the scheme of every tensor written.
    @discardableResult
    public static func rewrite(_ model: Model, to destination: String, transform: TensorTransform, options: Options) throws -> [TensorScheme] {
        let steps = plan(model, transform: transform, threads: options.threads)
        let context = EncodingContext(threads: options.threads, allowNonfinite: false)
        let writer = try makeWriter(like: model, destination: destination, steps: steps, inputs: model.inputPaths + transform.inputFiles,
                                    options: options, context: context)
        return try ModelConversion.run(steps, into: writer, context: context,
                                       progress: ProgressCounter(label: "merging", total: model.sourceTensorBytes, handler: options.progress))
    }

    /// A writer of `model`'s own format and layout: the same shard files
    /// holding the same tensors, the same side files and metadata. A PyTorch
    /// model is written as safetensors in the same layout (shards named as
    /// transformers names them).
    static func makeWriter(like model: Model, destination: String, steps: [ConversionStep], inputs: [String], options: Options,
                           context: EncodingContext) throws -> ModelWriter {
        switch model.format {
        case .container where options.part != nil || options.maxShardSize != nil:
            throw ConversionError.notAFolderOutput(path: model.path)
        case .container:
            var provenance = model.provenance ?? JSONObject()
            provenance.members.removeAll { $0.key == "qconv_version" }
            provenance.members.insert(("qconv_version", .string(QConvVersion.string)), at: 0)
            for member in options.note.members { provenance.append(member.key, member.value) }
            return try ContainerModelWriter(destination: destination, overwrite: options.overwrite, inputs: inputs,
                                            tensors: steps.map { ($0.output, $0.plannedScheme) }, sideFiles: model.sideFiles,
                                            metadata: model.metadata, provenance: provenance, context: context)
        case .safetensorsFile where options.part == nil && options.maxShardSize == nil,
             .pytorchFile where options.part == nil && options.maxShardSize == nil:
            return try CheckpointWriter(destination: destination, layout: .file, tensors: steps.map(\.output), metadata: model.metadata,
                                        overwrite: options.overwrite, inputs: inputs)
        case .safetensorsFile, .safetensorsFolder, .safetensorsShardedFolder, .pytorchFile, .pytorchFolder, .pytorchShardedFolder:
            let single = model.format == .safetensorsFile || model.format == .pytorchFile
            if let maximum = options.maxShardSize ?? (single ? .max : nil) {
                // Sharded anew as transformers shards (a single file becomes a folder).
                return try CheckpointWriter(destination: destination, layout: .folder(shards: CheckpointWriter.planShards(steps.map(\.output), maximumBytes: maximum)),
                                            tensors: steps.map(\.output), metadata: model.metadata, sideFiles: model.sideFiles,
                                            overwrite: options.overwrite, inputs: inputs, part: options.part)
            }
            let pytorch = model.format == .pytorchFolder || model.format == .pytorchShardedFolder
            var shards: [(fileName: String, tensors: [TensorInfo])] = model.files.map { (pytorch ? PyTorchReader.safetensorsName(of: $0.name) : $0.name, []) }
            for step in steps { shards[step.source.file].tensors.append(step.output) }
            // A sharded base's index is mirrored: its metadata keys are kept and
            // total_size follows the merged tensors (a resized vocabulary changes it).
            return try CheckpointWriter(destination: destination, layout: .folder(shards: shards), tensors: steps.map(\.output),
                                        metadata: model.metadata, sideFiles: model.sideFiles, sourceIndex: model.index,
                                        overwrite: options.overwrite, inputs: inputs, part: options.part)
        case .bitsandbytes(let layout):
            // Its layout records each tensor's scheme ahead of the data: the
            // merged tensors' offsets are computed first.
            let tensors = try steps.map { step -> (info: TensorInfo, scheme: TensorScheme) in
                guard let scheme = try step.finalScheme(context: context.allowing(nonfinite: step.allowNonfinite)) else {
                    preconditionFailure("\(step.output.name): a bitsandbytes scheme is known before encoding")
                }
                return (step.output, scheme)
            }
            var sharding: BitsandbytesWriter.Sharding = layout == .file && options.part == nil ? .singleFile
                : .mirroring(names: model.files.map(\.name), shardOfTensor: steps.map(\.source.file), index: model.index)
            if let maximum = options.maxShardSize { sharding = .bySize(maximumBytes: maximum) }
            return try BitsandbytesWriter(destination: destination, overwrite: options.overwrite, inputs: inputs, tensors: tensors,
                                          sideFiles: model.sideFiles, config: .keep, sharding: sharding, source: model.path, part: options.part)
        }
    }
}
