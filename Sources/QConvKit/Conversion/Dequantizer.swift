/// `dequant`: a quantized model back to a safetensors checkpoint with the
/// original names, shapes, order and metadata; and `to-safetensors`: any
/// model to safetensors, in the order safetensors' own writer uses.
public enum Dequantizer {
    /// The order tensors are written in.
    public enum TensorOrder {
        /// The model's own order.
        case source
        /// safetensors' `save_file` order within each file (by dtype, then
        /// name; `SafeTensorsWriter.referenceOrder`): a PyTorch state dict
        /// comes out byte for byte as `save_file` writes it.
        case referenceWriter
    }

    public struct Options {
        /// Output dtype of float tensors; nil keeps each tensor's source dtype.
        public var dtype: DType?
        /// Shard the output folder at this many bytes.
        public var maxShardSize: UInt64?
        public var threads: Int
        public var overwrite: Bool
        public var order: TensorOrder
        /// The command reports and progress name: "dequant" or "to-safetensors".
        public var command: String
        public var progress: ProgressHandler?
        /// Write only this part's shards of the output folder.
        public var part: OutputPart?

        public init(dtype: DType? = nil, maxShardSize: UInt64? = nil, threads: Int = defaultThreadCount, overwrite: Bool = false,
                    order: TensorOrder = .source, command: String = "dequant", progress: ProgressHandler? = nil, part: OutputPart? = nil) {
            self.dtype = dtype
            self.maxShardSize = maxShardSize
            self.threads = threads
            self.overwrite = overwrite
            self.order = order
            self.command = command
            self.progress = progress
            self.part = part
        }
    }

    public struct Report {
        public var command: String
        public var input: String
        public var output: String
        /// "file" or "folder".
        public var layout: String
        public var files: [String]
        public var tensors: [TensorInfo]
        public var outputBytes: UInt64
        public var seconds: Double
        /// One part of a job array: the shards it wrote.
        public var part: PartShards?

        public var json: JSONValue {
            .object([
                "command": .string(command), "input": .string(input), "output": .string(output), "layout": .string(layout),
                "files": .array(files.map { .string($0) }), "tensor_count": .int(tensors.count),
                "parameter_count": .int(tensors.reduce(0) { $0 + $1.elementCount }),
                "output_bytes": .uint(outputBytes), "seconds": .double((seconds * 1000).rounded() / 1000),
                "part": part?.json ?? .null,
            ])
        }
    }

    /// The dtype a tensor is written in: its source dtype, or the one asked
    /// for (float tensors that are quantized, or raw ones when asked).
    static func outputDType(_ tensor: ModelTensor, requested: DType?) -> DType {
        let source = tensor.info.dtype
        guard source.isDecodableToFloat else { return source }
        let wanted = requested ?? source
        if !tensor.scheme.isQuantized && requested == nil { return source }
        return wanted.isEncodableFromFloat ? wanted : .f32
    }

    /// What each tensor becomes: raw tensors that keep their dtype are
    /// copied, the others decoded (through `transform` when it changes them)
    /// and written as floats.
    static func plan(_ model: Model, options: Options, transform: TensorTransform?) -> [ConversionStep] {
        model.tensors.map { tensor in
            if let transform, let changed = transform.output(for: tensor.info) {
                let output = TensorInfo(name: tensor.name, dtype: options.dtype ?? changed.dtype, shape: changed.shape)
                return ConversionStep(source: tensor, output: output, action: .encode(FloatEncoder(dtype: output.dtype), values: {
                    try transform.transformedValues(of: tensor, threads: options.threads)
                }), allowNonfinite: transform.allowsNonFinite)
            }
            let output = TensorInfo(name: tensor.name, dtype: outputDType(tensor, requested: options.dtype), shape: tensor.info.shape)
            if !tensor.scheme.isQuantized && output.dtype == tensor.info.dtype { return .copy(tensor) }
            // Written as decoded: the checksum is checked on the way.
            return ConversionStep(source: tensor, output: output, action: .encode(FloatEncoder(dtype: output.dtype), values: {
                try tensor.values(checkingInOrder: true)
            }), allowNonfinite: true)
        }
    }

    /// The side files a dequantized model keeps: a config.json with a
    /// bitsandbytes `quantization_config` (a bitsandbytes checkpoint's, or one a
    /// container embedded from one) loses it, written anew (transformers would
    /// otherwise look for quantized weights); every other file is copied as it is.
    static func dequantizedSideFiles(_ model: Model) throws -> (copied: [SideFile], config: [UInt8]?) {
        guard let config = TransformersConfig.file(of: model) else { return (model.sideFiles, nil) }
        let bytes = try config.readAll()
        let path = FileSystem.join(model.path, config.name)
        guard (try? BitsandbytesConfigFile(path: path, bytes: bytes))?.isBitsandbytes == true else { return (model.sideFiles, nil) }
        return (model.sideFiles.filter { $0.name != TransformersConfig.fileName }, try BitsandbytesConfig.configWithoutQuantization(bytes, path: path))
    }

    /// Writes `model` as safetensors at `destination`: a single file when
    /// it ends in `.safetensors` (and no shard size is given), otherwise a model
    /// folder with the side files (config.json, ...).
    ///
    /// - Parameter transform: changes some tensors on the way (merge-lora).
    public static func dequantize(_ model: Model, to destination: String, options: Options,
                                  transform: TensorTransform? = nil) throws -> Report {
        let started = monotonicSeconds()
        var steps = plan(model, options: options, transform: transform)
        let asFile = destination.hasSuffix(".safetensors") && options.maxShardSize == nil && options.part == nil
        var shards = CheckpointWriter.planShards(steps.map(\.output), maximumBytes: asFile ? .max : options.maxShardSize ?? .max)
        if case .referenceWriter = options.order {
            shards = shards.map { ($0.fileName, SafeTensorsWriter.referenceOrder($0.tensors)) }
            let position = Dictionary(uniqueKeysWithValues: shards.flatMap(\.tensors).enumerated().map { ($1.name, $0) })
            steps.sort { position[$0.output.name]! < position[$1.output.name]! }
        }
        let outputs = steps.map(\.output)
        let layout: CheckpointWriter.Layout = asFile ? .file : .folder(shards: shards)
        let (sideFiles, config) = try dequantizedSideFiles(model)
        let writer = try CheckpointWriter(destination: destination, layout: layout, tensors: outputs, metadata: model.metadata,
                                          sideFiles: asFile ? [] : sideFiles, overwrite: options.overwrite,
                                          inputs: model.inputPaths + (transform?.inputFiles ?? []), part: options.part)
        if let config, !asFile { try writer.addFile(named: TransformersConfig.fileName, bytes: config) }
        let context = EncodingContext(threads: options.threads, allowNonfinite: true)
        try ModelConversion.run(steps, into: writer, context: context,
                                progress: ProgressCounter(label: options.command, total: model.sourceTensorBytes, handler: options.progress))
        let files = asFile ? [FileSystem.baseName(of: destination)] : try FileSystem.contents(of: destination)
        let bytes = asFile ? (FileSystem.size(of: destination) ?? 0)
            : files.reduce(0) { $0 + (FileSystem.size(of: FileSystem.join(destination, $1)) ?? 0) }
        return Report(command: options.command, input: model.path, output: destination, layout: asFile ? "file" : "folder", files: files,
                      tensors: outputs, outputBytes: bytes, seconds: monotonicSeconds() - started, part: writer.partShards)
    }
}
