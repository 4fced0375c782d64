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
        /// Replace an existing output.
        public var overwrite: Bool
        public var progress: ProgressHandler?

        public init(method: QuantizationMethod, selection: TensorSelection, threads: Int = defaultThreadCount,
                    allowNonfinite: Bool = false, overwrite: Bool = false, progress: ProgressHandler? = nil) {
            self.method = method
            self.selection = selection
            self.threads = threads
            self.allowNonfinite = allowNonfinite
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
            return .object(object)
        }
    }

    /// What each tensor of `source` becomes: the selected ones quantized, the
    /// others copied as they are.
    public static func plan(_ source: Model, options: Options) -> [ConversionStep] {
        let encoder = options.method.encoder
        return source.tensors.map { tensor in
            guard options.selection.shouldQuantize(tensor.info) else { return .copy(tensor) }
            return ConversionStep(source: tensor, output: tensor.info, action: .encode(encoder, values: { try tensor.values() }),
                                  allowNonfinite: options.allowNonfinite)
        }
    }

    /// Converts `source` into a container at `destination`.
    ///
    /// - Throws: `ConversionError.alreadyQuantized` for a source that holds
    ///   tensors quantized by a method qconv writes (a container's; FP8
    ///   weights are decoded and quantized again), the readers', encoders'
    ///   and writer's errors.
    public static func convert(_ source: Model, to destination: String, options: Options) throws -> ConversionReport {
        let started = monotonicSeconds()
        if let quantized = source.tensors.first(where: { $0.scheme.method != nil }) {
            throw ConversionError.alreadyQuantized(path: source.path, tensor: quantized.name, scheme: quantized.scheme.name)
        }
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
        report.tensors = zip(steps, schemes).map { ConversionReport.Tensor(info: $0.output, scheme: $1) }
        report.embeddedFiles = writer.embeddedFileNames
        report.outputBytes = FileSystem.size(of: destination) ?? 0
        report.seconds = monotonicSeconds() - started
        return report
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
