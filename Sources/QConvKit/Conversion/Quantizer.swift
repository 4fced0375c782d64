/// `to-nf4`, `to-fp4`, `to-int8`: a model into a qconv container, streamed
/// tensor by tensor, chunk by chunk, on all cores.
///
/// Memory stays at a few chunk buffers plus the per-tensor side data (4-bit
/// absmax values, int8 row scales and outlier values), never a whole model.
public enum Quantizer {
    /// Everything a quantizing conversion needs besides its input and output.
    public struct Options {
        public var method: QuantizationMethod
        public var selection: TensorSelection
        public var threads: Int
        /// Quantize tensors holding NaN or infinity instead of refusing them.
        public var allowNonfinite: Bool
        /// Store kept float tensors wider than this (F32, F64) in it (F16 or BF16).
        public var keepDType: DType?
        /// Replace an existing output.
        public var overwrite: Bool
        public var progress: ProgressHandler?

        public init(method: QuantizationMethod, selection: TensorSelection, threads: Int = defaultThreadCount,
                    allowNonfinite: Bool = false, keepDType: DType? = nil, overwrite: Bool = false, progress: ProgressHandler? = nil) {
            precondition(keepDType.map { $0.isEncodableFromFloat } ?? true, "kept tensors are stored in a float dtype")
            self.method = method
            self.selection = selection
            self.threads = threads
            self.allowNonfinite = allowNonfinite
            self.keepDType = keepDType
            self.overwrite = overwrite
            self.progress = progress
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
        let encoder = options.method.encoder
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

    /// Converts `source` into a container at `destination`.
    ///
    /// - Throws: `ConversionError.alreadyQuantized` for a source that holds
    ///   tensors quantized by a method qconv writes (a container's; FP8
    ///   weights are decoded and quantized again), the readers', encoders'
    ///   and writer's errors.
    public static func convert(_ source: Model, to destination: String, options: Options) throws -> ConversionReport {
        let started = monotonicSeconds()
        try check(source, options: options)
        let steps = plan(source, options: options)
        let context = EncodingContext(threads: options.threads, allowNonfinite: options.allowNonfinite)
        let writer = try ContainerModelWriter(destination: destination, overwrite: options.overwrite, inputs: source.inputPaths,
                                              tensors: steps.map { ($0.output, $0.plannedScheme) }, sideFiles: source.sideFiles,
                                              metadata: source.metadata, provenance: provenance(source, options: options), context: context)
        let schemes = try ModelConversion.run(steps, into: writer, context: context,
                                              progress: ProgressCounter(label: options.method.commandName, total: source.sourceTensorBytes,
                                                                        handler: options.progress))
        var report = ConversionReport(input: source.path, output: destination, method: options.method)
        report.sourceBytes = source.fileBytes
        report.tensors = zip(steps, schemes).map { ConversionReport.Tensor(info: $0.source.info, scheme: $1, stored: $0.output) }
        report.embeddedFiles = writer.embeddedFileNames
        report.leftOutFiles = source.leftOutFiles
        report.outputBytes = FileSystem.size(of: destination) ?? 0
        report.seconds = monotonicSeconds() - started
        return report
    }

    /// Refuses a source that is quantized already, and a selection that
    /// names nothing (`SelectionError`).
    static func check(_ source: Model, options: Options) throws {
        // A container's tensors; FP8 weights are decoded and quantized again.
        if let quantized = source.tensors.first(where: { $0.scheme.method != nil }) {
            throw ConversionError.alreadyQuantized(path: source.path, tensor: quantized.name, scheme: quantized.scheme.name)
        }
        try options.selection.check(against: source.tensors.map(\.info))
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
