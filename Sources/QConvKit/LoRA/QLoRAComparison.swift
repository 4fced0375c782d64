/// How far apart the three ways of merging a QLoRA adapter are, per changed
/// tensor and overall, so that a user can choose with numbers:
///
/// - `W16`: into the 16-bit base, `round(W + delta)` (what most guides do);
/// - `DQ16`: into the dequantized base kept in 16 bits,
///   `round(round(dequant(quant(W))) + delta)`, the model the adapter was
///   trained with (`QuantizedBaseTransform`);
/// - `Q4`: `DQ16` quantized again and decoded, what PEFT's merge into the
///   quantized base stores (and `merge-lora` into a container writes).
///
/// With a quantized BASE (a container) `W16` is unknown: only `DQ16` and `Q4`
/// are compared. Every figure streams: a few passes over each changed tensor
/// (the quantizations need their block scales first), memory a few buffers
/// per thread.
public struct QLoRAComparison {
    public struct Tensor {
        public let name: String
        /// The applied delta: `DQ16` against the dequantized base (its RMSE is the delta's RMS).
        public let delta: ErrorMetrics
        /// `DQ16` measured against `W16`; nil for a quantized BASE.
        public let sixteenToDequantized: ErrorMetrics?
        /// `Q4` measured against `DQ16`.
        public let dequantizedToRequantized: ErrorMetrics
        /// `Q4` measured against `W16`; nil for a quantized BASE.
        public let sixteenToRequantized: ErrorMetrics?
    }

    public let tensors: [Tensor]
    /// Changed tensors that are not quantized (all merges agree) or whose scheme is not compared (int8 of a container).
    public let skipped: [String]

    public var delta: ErrorSummary { ErrorSummary(tensors.map(\.delta)) }
    public var sixteenToDequantized: ErrorSummary? { Self.summary(tensors.map(\.sixteenToDequantized)) }
    public var dequantizedToRequantized: ErrorSummary { ErrorSummary(tensors.map(\.dequantizedToRequantized)) }
    public var sixteenToRequantized: ErrorSummary? { Self.summary(tensors.map(\.sixteenToRequantized)) }

    private static func summary(_ metrics: [ErrorMetrics?]) -> ErrorSummary? {
        let present = metrics.compactMap { $0 }
        return present.isEmpty && !metrics.isEmpty ? nil : ErrorSummary(present)
    }

    /// Compares the merges of `plan` into `base`: a 16-bit base quantized
    /// `through` this way, or (`through` nil) a container's 4-bit tensors.
    public static func compare(plan: LoRAMergePlan, base: Model, through: WeightQuantization?, threads: Int,
                               progress: ProgressHandler? = nil) throws -> QLoRAComparison {
        let selection = try TensorSelection()
        var compared: [Tensor] = [], skipped: [String] = []
        // The offsets of double quantization as the re-quantization writes them: bitsandbytes' (its
        // layout, a QLoRA model's) in float32 as torch, a container's in double.
        var mean = DoubleQuantization.Mean.float64
        if through != nil { mean = .torchFloat32 }
        if case .bitsandbytes = base.format { mean = .torchFloat32 }
        let counter = ProgressCounter(label: "comparing", total: plan.changes.reduce(0) { $0 + UInt64($1.base.byteCount) }, handler: progress)
        defer { counter.finish() }
        for change in plan.changes {
            defer { counter.advance(by: UInt64(change.base.byteCount), item: change.base.name) }
            guard let tensor = base.tensor(named: change.base.name), change.kind != .replacement, change.kind != .bias,
                  let quantization = through.flatMap({ selection.shouldQuantize(tensor.info) ? $0 : nil }) ?? Self.quantization(of: tensor.scheme)
            else {
                skipped.append(change.base.name)
                continue
            }
            // As the merges write them: through a quantization products are summed as torch does, into a container as they always were.
            let prepared = try plan.prepare(change, decodeReplacement: false, threads: threads, fusedProducts: through != nil)
            compared.append(try compareTensor(tensor, prepared: prepared, quantization: quantization, mean: mean, sixteenBit: through != nil,
                                              threads: threads))
        }
        return QLoRAComparison(tensors: compared, skipped: skipped)
    }

    /// The quantization a container's tensor re-quantizes with, when compared (4-bit).
    private static func quantization(of scheme: TensorScheme) -> WeightQuantization? {
        switch scheme {
        case .fourBit(let p): return .fourBit(p.format, blockSize: p.blockSize, doubleQuant: p.blockScales != .float32)
        case .raw, .int8, .scaledFP8, .strided: return nil
        }
    }

    /// One tensor's sources, read together chunk by chunk: the base, then
    /// `W16` (when known), `DQ16`, `Q4`.
    private static func compareTensor(_ tensor: ModelTensor, prepared: LoRAPreparedChange, quantization: WeightQuantization,
                                      mean: DoubleQuantization.Mean, sixteenBit: Bool,
                                      threads: Int) throws -> Tensor {
        let dtype = tensor.info.dtype
        var stored = try tensor.values()
        if tensor.scheme.isQuantized { stored = DTypeRoundedSource(stored, through: dtype) }
        let dequantized = sixteenBit ? DTypeRoundedSource(try QuantizationRoundTrip(stored, quantization: quantization, mean: mean, threads: threads), through: dtype)
            : stored
        let mergedDequantized = DTypeRoundedSource(try MergedTensorSource(base: dequantized, prepared: prepared, threads: threads), through: dtype)
        let requantized = DTypeRoundedSource(try QuantizationRoundTrip(mergedDequantized, quantization: quantization, mean: mean, threads: threads), through: dtype)
        var sources: [FloatTensorSource] = [dequantized, mergedDequantized, requantized]
        if sixteenBit { sources.append(DTypeRoundedSource(try MergedTensorSource(base: stored, prepared: prepared, threads: threads), through: dtype)) }
        let metrics = try measure(sources, pairs: [(0, 1), (1, 2), (3, 1), (3, 2)].filter { $0.0 < sources.count }, threads: threads)
        return Tensor(name: tensor.name, delta: metrics[0], sixteenToDequantized: sixteenBit ? metrics[2] : nil, dequantizedToRequantized: metrics[1],
                      sixteenToRequantized: sixteenBit ? metrics[3] : nil)
    }

    /// Reads every source chunk by chunk and measures each pair (original,
    /// reconstructed); chunks' figures are merged in order.
    private static func measure(_ sources: [FloatTensorSource], pairs: [(Int, Int)], threads: Int) throws -> [ErrorMetrics] {
        let n = sources[0].info.elementCount
        let unit = sources.reduce(1) { leastCommonMultiple($0, max(1, $1.alignment)) }
        let plan = ChunkPlan(elementCount: n, unit: unit, chunkLimit: 1 << 16)
        let slots = max(1, min(plan.chunkCount, 2 * threads))
        let scratch = sources.map { $0.scratchBytes(for: plan.chunk) }.max() ?? 0
        let buffers = (0..<sources.count).map { _ in ChunkBuffers(slots: slots, size: ChunkBuffers.Size(floats: plan.chunk, bytes: 0, scratch: max(1, scratch))) }
        let partial = SlotValues<[ErrorMetrics]>(slots: slots, initial: [])
        var total = [ErrorMetrics](repeating: ErrorMetrics(), count: pairs.count)
        try computeChunksInOrder(count: plan.chunkCount, slots: slots, threads: threads, compute: { c, slot in
            let range = plan.chunkRange(c)
            for (i, source) in sources.enumerated() {
                try source.readFloats(range, into: buffers[i].floats(slot).baseAddress!, scratch: buffers[i].scratch(slot))
            }
            partial[slot] = pairs.map { pair in
                var metrics = ErrorMetrics()
                metrics.add(original: UnsafeBufferPointer(rebasing: buffers[pair.0].floats(slot)[0..<range.count]),
                            reconstructed: UnsafeBufferPointer(rebasing: buffers[pair.1].floats(slot)[0..<range.count]))
                return metrics
            }
        }, inOrder: { _, slot in
            for i in total.indices { total[i].merge(partial[slot][i]) }
        })
        return total
    }
}
