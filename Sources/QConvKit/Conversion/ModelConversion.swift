/// One tensor of a conversion: where it comes from, what it becomes, how.
public struct ConversionStep {
    public enum Action {
        /// Its stored parts as they are, in the same scheme (checksums checked on the way).
        case copy
        /// Values (from `values`, read when the tensor's turn comes) encoded anew.
        case encode(TensorEncoder, values: () throws -> FloatTensorSource)
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

    /// A tensor copied as it is stored.
    public static func copy(_ tensor: ModelTensor) -> ConversionStep {
        ConversionStep(source: tensor, output: tensor.info, action: .copy)
    }

    /// The scheme the writer plans the tensor's room for.
    public var plannedScheme: TensorScheme {
        switch action {
        case .copy: return source.scheme
        case .encode(let encoder, _): return encoder.plannedScheme(for: output)
        }
    }
}

/// The one loop of every command that writes a model (`to-*`, `dequant`,
/// `merge-lora`): each step's tensor, in order, copied or encoded into a
/// `ModelWriter`. Which format is read and which is written is the readers'
/// and writers' business; this never asks.
public enum ModelConversion {
    /// Runs `steps` in order into `writer` and commits it; any error discards
    /// the output and is rethrown.
    ///
    /// - Returns: the scheme each tensor was written with.
    @discardableResult
    public static func run(_ steps: [ConversionStep], into writer: ModelWriter, context: EncodingContext,
                           progress: ProgressCounter) throws -> [TensorScheme] {
        defer { progress.finish() }
        var schemes: [TensorScheme] = []
        do {
            for step in steps {
                let scheme = try write(step, into: writer, context: context)
                schemes.append(scheme)
                progress.advance(by: UInt64(step.source.info.byteCount), item: step.source.name)
            }
            try writer.commit()
        } catch {
            writer.discard()
            throw error
        }
        return schemes
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
            }
            return scheme
        }
        return scheme
    }
}
