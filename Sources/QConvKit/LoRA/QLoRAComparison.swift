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
    /// Changed tensors that are not quantized (all merges agree), whose scheme is not compared (int8 of a container),
    /// or whose values the adapter replaces (a base layer it stores: no base to quantize).
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
        // As the merges write them: through a quantization products are summed as torch does, into a container as they always were.
        let summing = through != nil ? plan.throughQuantization { QuantizedBaseTransform.isQuantized($0, selection: selection) } : plan
        let counter = ProgressCounter(label: "comparing", total: plan.changes.reduce(0) { $0 + UInt64($1.base.byteCount) }, handler: progress)
        defer { counter.finish() }
        for change in plan.changes {
            defer { counter.advance(by: UInt64(change.base.byteCount), item: change.base.name) }
            guard let tensor = base.tensor(named: change.base.name), change.replacement == nil, change.kind != .bias,
                  let quantization = through.flatMap({ selection.shouldQuantize(tensor.info) ? $0 : nil }) ?? Self.quantization(of: tensor.scheme)
            else {
                skipped.append(change.base.name)
                continue
            }
            let prepared = try summing.prepare(change, decodeReplacement: false, threads: threads)
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

    /// One tensor's merges, computed together chunk by chunk from one read
    /// of the base: `DQ16` from the dequantized base, `Q4` from `DQ16`,
    /// `W16` (when known) from the base itself.
    private static func compareTensor(_ tensor: ModelTensor, prepared: LoRAPreparedChange, quantization: WeightQuantization,
                                      mean: DoubleQuantization.Mean, sixteenBit: Bool,
                                      threads: Int) throws -> Tensor {
        let dtype = tensor.info.dtype
        var stored = try tensor.values()
        if tensor.scheme.isQuantized { stored = DTypeRoundedSource(stored, through: dtype) }
        // The sources as the merges read them; making the round trips reads
        // their inputs once for the block scales, the chunks below do the rest.
        let dequantizing = sixteenBit ? try QuantizationRoundTrip(stored, quantization: quantization, mean: mean, threads: threads) : nil
        let dequantized = dequantizing.map { DTypeRoundedSource($0, through: dtype) } ?? stored
        let merging = try MergedTensorSource(base: dequantized, prepared: prepared, threads: threads)
        let requantizing = try QuantizationRoundTrip(DTypeRoundedSource(merging, through: dtype), quantization: quantization, mean: mean, threads: threads)
        let mergingSixteen = sixteenBit ? try MergedTensorSource(base: stored, prepared: prepared, threads: threads) : nil

        let n = tensor.info.elementCount
        let sources: [FloatTensorSource?] = [stored, dequantizing, merging, requantizing, mergingSixteen]
        let unit = sources.reduce(1) { leastCommonMultiple($0, max(1, $1?.alignment ?? 1)) }
        let plan = ChunkPlan(elementCount: n, unit: unit, chunkLimit: 1 << 16)
        let slots = max(1, min(plan.chunkCount, 2 * threads))
        let scratch = max(1, requantizing.scratchBytes(for: plan.chunk), dequantizing?.scratchBytes(for: plan.chunk) ?? 0)
        // Per slot: the base, DQ16's start, DQ16, Q4, W16.
        let buffers = ChunkBuffers(slots: slots, size: ChunkBuffers.Size(floats: 5 * plan.chunk, bytes: 0, scratch: scratch))
        let pairs = [(1, 2), (2, 3), (4, 2), (4, 3)]
        let partial = SlotValues<[ErrorMetrics]>(slots: slots, initial: [])
        var total = [ErrorMetrics](repeating: ErrorMetrics(), count: pairs.count)
        try computeChunksInOrder(count: plan.chunkCount, slots: slots, threads: threads, compute: { c, slot in
            let range = plan.chunkRange(c), count = range.count
            let floats = buffers.floats(slot).baseAddress!, chunk = plan.chunk
            let base = floats, merged = floats + 2 * chunk, requantized = floats + 3 * chunk, sixteen = floats + 4 * chunk
            try stored.readFloats(range, into: base, scratch: buffers.scratch(slot))
            // Without a round trip the merges start from the base itself.
            var start = base
            if let dequantizing {
                start = floats + chunk
                start.update(from: base, count: count)
                dequantizing.roundTrip(start, range: range, scratch: buffers.scratch(slot))
                FloatConversion.roundTrip(start, count: count, through: dtype)
            }
            merged.update(from: start, count: count)
            merging.applyChange(to: merged, range: range)
            FloatConversion.roundTrip(merged, count: count, through: dtype)
            requantized.update(from: merged, count: count)
            requantizing.roundTrip(requantized, range: range, scratch: buffers.scratch(slot))
            FloatConversion.roundTrip(requantized, count: count, through: dtype)
            if let mergingSixteen {
                sixteen.update(from: base, count: count)
                mergingSixteen.applyChange(to: sixteen, range: range)
                FloatConversion.roundTrip(sixteen, count: count, through: dtype)
            }
            let measured = [base, start, merged, requantized, sixteen]
            partial[slot] = pairs.prefix(sixteenBit ? 4 : 2).map { pair in
                var metrics = ErrorMetrics()
                metrics.add(original: UnsafeBufferPointer(start: measured[pair.0], count: count),
                            reconstructed: UnsafeBufferPointer(start: measured[pair.1], count: count))
                return metrics
            }
        }, inOrder: { _, slot in
            for i in partial[slot].indices { total[i].merge(partial[slot][i]) }
        })
        return Tensor(name: tensor.name, delta: total[0], sixteenToDequantized: sixteenBit ? total[2] : nil, dequantizedToRequantized: total[1],
                      sixteenToRequantized: sixteenBit ? total[3] : nil)
    }
}
