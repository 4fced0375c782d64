/// `to-nf4`, `to-fp4`, `to-int8`: a model into a qconv container or a
/// bitsandbytes model folder, streamed tensor by tensor, chunk by chunk, on
/// all cores. A source whose tensors are quantized already with the method
/// asked for (a container, a bitsandbytes checkpoint) is laid out again in
/// the other format: its stored codes are copied, never quantized twice.
///
/// Memory stays at a few chunk buffers plus the per-tensor side data (4-bit
/// absmax values, int8 row scales and outlier values), never a whole model.
public enum Quantizer {
    /// Everything a quantizing conversion needs besides its input and output.
    /// What a conversion writes.
    public enum Output: Equatable {
        /// A qconv container (docs/FORMAT.md).
        case container
        /// A model folder in transformers' bitsandbytes layout: shards of at
        /// most `maximumShardBytes`, `bnb_4bit_compute_dtype` = `computeDType`
        /// (nil: the dtype of the quantized tensors for 4-bit, float32 for int8).
        case bitsandbytes(computeDType: DType?, maximumShardBytes: UInt64)
    }

    public struct Options {
        public var method: QuantizationMethod
        public var output: Output
        public var selection: TensorSelection
        public var threads: Int
        /// Quantize tensors holding NaN or infinity instead of refusing them.
        public var allowNonfinite: Bool
        /// Store kept float tensors wider than this (F32, F64) in it (F16 or BF16).
        public var keepDType: DType?
        /// Replace an existing output.
        public var overwrite: Bool
        public var progress: ProgressHandler?
        /// A folder output: write only this part's shards.
        public var part: OutputPart?

        public init(method: QuantizationMethod, output: Output = .container, selection: TensorSelection, threads: Int = defaultThreadCount,
                    allowNonfinite: Bool = false, keepDType: DType? = nil, overwrite: Bool = false, progress: ProgressHandler? = nil,
                    part: OutputPart? = nil) {
            precondition(keepDType.map { $0.isEncodableFromFloat } ?? true, "kept tensors are stored in a float dtype")
            self.method = method
            self.output = output
            self.selection = selection
            self.threads = threads
            self.allowNonfinite = allowNonfinite
            self.keepDType = keepDType
            self.overwrite = overwrite
            self.progress = progress
            self.part = part
        }

        /// The options as recorded in the container header.
        var json: JSONValue {
            var object = JSONObject()
            object.append("command", .string(method.commandName))
            switch method {
            case let .fourBit(_, blockSize, doubleQuant):
                object.append("block_size", .int(blockSize))
                object.append("double_quant", .bool(doubleQuant))
            case let .int8(outliers):
                object.append("outliers", .string(outliers.description))
            }
            object.append("selection", selection.json)
            object.append("allow_nonfinite", .bool(allowNonfinite))
            if let keepDType { object.append("keep_dtype", .string(keepDType.rawValue)) }
            return .object(object)
        }
    }

    /// What each tensor of `source` becomes: the selected ones quantized, the
    /// others copied as they are (or stored in the smaller `keepDType`).
    public static func plan(_ source: Model, options: Options) -> [ConversionStep] {
        let encoder: TensorEncoder
        switch options.output {
        case .container: encoder = options.method.encoder
        case .bitsandbytes: encoder = options.method.encoder(mean: .torchFloat32)
        }
        return source.tensors.map { tensor in
            guard options.selection.shouldQuantize(tensor.info) else {
                guard let dtype = keptDType(tensor.info, options: options) else { return .copy(tensor) }
                return ConversionStep(source: tensor, output: TensorInfo(name: tensor.name, dtype: dtype, shape: tensor.info.shape),
                                      action: .encode(FloatEncoder(dtype: dtype), values: { try tensor.values() }), allowNonfinite: true)
            }
            return ConversionStep(source: tensor, output: tensor.info, action: .encode(encoder, values: { try tensor.values() }),
                                  allowNonfinite: options.allowNonfinite)
        }
    }

    /// The dtype a kept tensor is stored in, when `keepDType` makes it smaller.
    static func keptDType(_ tensor: TensorInfo, options: Options) -> DType? {
        guard let wanted = options.keepDType, tensor.dtype.isDecodableToFloat, wanted.bitWidth < tensor.dtype.bitWidth else { return nil }
        return wanted
    }

    /// Converts `source` into a container or a bitsandbytes folder at `destination`.
    ///
    /// - Throws: `ConversionError.schemeMismatch` for a source whose quantized
    ///   tensors are stored with another scheme than the method's, the
    ///   readers', encoders' and writers' errors.
    public static func convert(_ source: Model, to destination: String, options: Options) throws -> ConversionReport {
        let started = monotonicSeconds()
        let relaid = try check(source, options: options)
        var steps = relaid ? source.tensors.map(ConversionStep.copy) : plan(source, options: options)
        let context = EncodingContext(threads: options.threads, allowNonfinite: options.allowNonfinite)
        let writer: ModelWriter
        var embedded: [String] = []
        switch options.output {
        case .container:
            let container = try ContainerModelWriter(destination: destination, overwrite: options.overwrite, inputs: source.inputPaths,
                                                     tensors: steps.map { ($0.output, $0.plannedScheme) }, sideFiles: source.sideFiles,
                                                     metadata: source.metadata, provenance: provenance(source, options: options), context: context)
            writer = container
            embedded = container.embeddedFileNames
        case let .bitsandbytes(computeDType, maximumShardBytes):
            let made = try bitsandbytesWriter(source, steps: steps, destination: destination, options: options, computeDType: computeDType,
                                              maximumShardBytes: maximumShardBytes, context: context)
            steps = made.steps
            writer = made.writer
        }
        let schemes = try ModelConversion.run(steps, into: writer, context: context,
                                              progress: ProgressCounter(label: options.method.commandName, total: source.sourceTensorBytes,
                                                                        handler: options.progress))
        var report = ConversionReport(input: source.path, output: destination, method: options.method)
        report.sourceBytes = source.fileBytes
        report.tensors = zip(steps, schemes).map { ConversionReport.Tensor(info: $0.source.info, scheme: $1, stored: $0.output) }
        report.embeddedFiles = embedded
        report.leftOutFiles = source.leftOutFiles
        report.relaid = relaid
        report.part = writer.partShards
        if case .bitsandbytes = options.output {
            report.format = ModelFormat.bitsandbytes(.folder).name
            report.files = try FileSystem.contents(of: destination)
            report.outputBytes = report.files.reduce(0) { $0 + (FileSystem.size(of: FileSystem.join(destination, $1)) ?? 0) }
        } else {
            report.outputBytes = FileSystem.size(of: destination) ?? 0
        }
        report.seconds = monotonicSeconds() - started
        return report
    }

    /// Whether `source` is quantized already, so its codes are laid out again
    /// as they are (`checkRelayable`); otherwise checks that the selection
    /// names something (`SelectionError`).
    @discardableResult
    static func check(_ source: Model, options: Options) throws -> Bool {
        let relaid = try checkRelayable(source, method: options.method)
        if !relaid { try options.selection.check(against: source.tensors.map(\.info)) }
        return relaid
    }

    /// The header's record of how the container was made.
    static func provenance(_ source: Model, options: Options) -> JSONObject {
        JSONObject([
            ("qconv_version", .string(QConvVersion.string)),
            ("options", options.json),
            ("source", .object([
                "path": .string(source.path), "layout": .string(source.format.layoutDescription),
                "files": .array(source.files.map { .string($0.name) }),
                "tensor_bytes": .uint(source.sourceTensorBytes),
            ])),
        ])
    }
}
