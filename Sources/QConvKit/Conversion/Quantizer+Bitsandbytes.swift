extension Quantizer {
    /// Whether `source` holds quantized tensors, to be laid out again as
    /// they are stored (never quantized twice).
    ///
    /// - Throws: `ConversionError.schemeMismatch` when one is stored with
    ///   another scheme than `method` makes.
    static func checkRelayable(_ source: Model, method: QuantizationMethod) throws -> Bool {
        // Schemes qconv writes (FP8 weights are decoded and quantized like any float tensor).
        let quantized = source.tensors.filter { $0.scheme.method != nil }
        if let other = quantized.first(where: { !method.matches($0.scheme) }) {
            throw ConversionError.schemeMismatch(path: source.path, tensor: other.name, stored: other.scheme.summary, asked: method.summary)
        }
        return !quantized.isEmpty
    }

    /// The bitsandbytes writer for `steps`, and the steps in its writing order.
    ///
    /// The writer plans every byte up front, so each tensor's final scheme is
    /// computed first: a double-quantized 4-bit tensor's offset takes a pass
    /// over its values that only takes block maxima (about a quarter of the
    /// time the quantization takes).
    static func bitsandbytesWriter(_ source: Model, steps: [ConversionStep], destination: String, options: Options, computeDType: DType?,
                                   maximumShardBytes: UInt64, context: EncodingContext) throws -> (writer: BitsandbytesWriter, steps: [ConversionStep]) {
        var tensors: [(info: TensorInfo, scheme: TensorScheme)] = []
        for step in steps {
            guard let scheme = try step.finalScheme(context: context.allowing(nonfinite: step.allowNonfinite)) else {
                throw BitsandbytesError.noBitsandbytesForm(path: source.path, tensor: step.output.name, reason: "is int8 with outlier columns")
            }
            tensors.append((step.output, scheme))
        }
        let mode = try BitsandbytesPlan.mode(tensors) ?? {
            switch options.method {
            case let .fourBit(format, _, doubleQuant): return .fourBit(format, doubleQuant: doubleQuant)
            case .int8: return .eightBit
            }
        }()
        var compute = computeDType ?? .f32
        if case .fourBit = mode, computeDType == nil, let first = tensors.first(where: { $0.scheme.isQuantized }) {
            compute = first.info.dtype
        }
        let config = BitsandbytesConfig(mode: mode, computeDType: compute, skipModules: BitsandbytesPlan.skipModules(tensors))
        let writer = try BitsandbytesWriter(destination: destination, overwrite: options.overwrite, inputs: source.inputPaths, tensors: tensors,
                                            sideFiles: source.sideFiles, config: .set(config), sharding: .bySize(maximumBytes: maximumShardBytes),
                                            source: source.path, part: options.part)
        let byName = Dictionary(steps.map { ($0.output.name, $0) }, uniquingKeysWith: { first, _ in first })
        return (writer, (writer.writingOrder ?? []).map { byName[$0]! })
    }
}
