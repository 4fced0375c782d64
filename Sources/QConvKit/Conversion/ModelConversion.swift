/// One tensor of a conversion: where it comes from, what it becomes, how.
public struct ConversionStep {
    public enum Action {
        /// Its stored parts as they are, in the same scheme (checksums checked on the way).
        case copy
        /// Values (from `values`, read when the tensor's turn comes) encoded anew.
        case encode(TensorEncoder, values: () throws -> FloatTensorSource)
        /// A strided view's elements copied in order into one contiguous raw part.
        case gather
    }

    public let source: ModelTensor
    /// The tensor as the output describes it (name, dtype, shape).
    public let output: TensorInfo
    public let action: Action
    /// NaN and infinity may be encoded (only checked by `encode`).
    public let allowNonfinite: Bool

    public init(source: ModelTensor, output: TensorInfo, action: Action, allowNonfinite: Bool = false) {
        self.source = source
        self.output = output
        self.action = action
        self.allowNonfinite = allowNonfinite
    }

    /// A tensor copied as it is stored; a strided view is written
    /// contiguous, and FP8 weights, which no output format holds, are
    /// decoded to their dtype.
    public static func copy(_ tensor: ModelTensor) -> ConversionStep {
        switch tensor.scheme {
        case .raw, .fourBit, .int8: return ConversionStep(source: tensor, output: tensor.info, action: .copy)
        case .strided: return ConversionStep(source: tensor, output: tensor.info, action: .gather)
        case .scaledFP8:
            return ConversionStep(source: tensor, output: tensor.info, action: .encode(FloatEncoder(dtype: tensor.info.dtype), values: {
                try tensor.values(checkingInOrder: true)
            }), allowNonfinite: true)
        }
    }

    /// The scheme the tensor will be written with, computed before writing
    /// (a 4-bit tensor's double-quantization offset takes a pass over its
    /// values): what a layout that records it ahead of the data plans with.
    /// Nil when it cannot be known in advance (int8 outlier columns).
    public func finalScheme(context: EncodingContext) throws -> TensorScheme? {
        switch action {
        case .copy: return source.scheme
        case let .encode(encoder, values): return try encoder.finalScheme(for: values, as: output, context: context)
        case .gather: return .raw
        }
    }

    /// The scheme the writer plans the tensor's room for.
    public var plannedScheme: TensorScheme {
        switch action {
        case .copy: return source.scheme
        case .encode(let encoder, _): return encoder.plannedScheme(for: output)
        case .gather: return .raw
        }
    }
}

/// The one loop of every command that writes a model (`to-*`, `dequant`,
/// `merge-lora`): each step's tensor, in order, copied or encoded into a
/// `ModelWriter`. Which format is read and which is written is the readers'
/// and writers' business; this never asks.
public enum ModelConversion {
    /// Runs `steps` into `writer`, in the order it takes them
    /// (`ModelWriter.writingOrder`, else as listed), and commits it; any
    /// error discards the output and is rethrown.
    ///
    /// - Returns: the scheme each tensor was written with, in the order of `steps`.
    @discardableResult
    public static func run(_ steps: [ConversionStep], into writer: ModelWriter, context: EncodingContext,
                           progress: ProgressCounter) throws -> [TensorScheme] {
        defer { progress.finish() }
        var schemes = steps.map(\.plannedScheme)
        do {
            for i in writingOrder(of: steps, for: writer) {
                let step = steps[i]
                // One part of a job array skips the tensors of the other parts' shards.
                guard writer.writes(step.output) else { continue }
                schemes[i] = try write(step, into: writer, context: context)
                progress.advance(by: UInt64(step.source.info.byteCount), item: step.source.name)
            }
            try writer.commit()
        } catch {
            writer.discard()
            throw error
        }
        return schemes
    }

    /// The indexes of `steps` in the order `writer` takes their tensors.
    private static func writingOrder(of steps: [ConversionStep], for writer: ModelWriter) -> [Int] {
        guard let names = writer.writingOrder else { return Array(steps.indices) }
        let position = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        return steps.indices.sorted { (position[steps[$0].output.name] ?? .max, $0) < (position[steps[$1].output.name] ?? .max, $1) }
    }

    private static func write(_ step: ConversionStep, into writer: ModelWriter, context: EncodingContext) throws -> TensorScheme {
        var scheme = TensorScheme.raw
        try writer.writeTensor(step.output) { sink in
            switch step.action {
            case .copy:
                // A quantized tensor copied as it is stored obeys the rules decoding applies to
                // its side parts (outlier columns), as if it were read: one set of rules for every command.
                if case .raw = step.source.scheme {} else { _ = try SideData(step.source) }
                for part in step.source.parts { try sink.copy(part, context: context) }
                scheme = step.source.scheme
            case let .encode(encoder, values):
                scheme = try encoder.encode(try values(), as: step.output, from: step.source.filePath, into: sink,
                                            context: context.allowing(nonfinite: step.allowNonfinite))
            case .gather:
                try StridedCopy.write(step.source, into: sink, context: context)
                scheme = .raw
            }
            return scheme
        }
        return scheme
    }
}
