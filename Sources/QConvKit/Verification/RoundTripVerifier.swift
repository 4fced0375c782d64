import Glibc

/// `verify ORIGINAL CONVERTED`: streams both sides and measures how much each
/// tensor changed. Tensors a quantized model stores raw must be
/// byte-identical, except those its provenance says a merge rewrote
/// (`merge-lora` into a container records them under `merged_adapter.tensors`):
/// a merged tensor is not a copy of any original, so it is measured like a
/// quantized one.
public enum RoundTripVerifier {
    /// The provenance member `merge-lora` adds to a container it writes.
    public static let mergeProvenanceKey = "merged_adapter"

    /// Names of the tensors that merges rewrote, from every `merged_adapter`
    /// member of a provenance (one per merge, in order).
    public static func mergedTensorNames(in provenance: JSONObject?) -> Set<String> {
        var names = Set<String>()
        for member in provenance?.members ?? [] where member.key == mergeProvenanceKey {
            for value in member.value.objectValue?["tensors"]?.arrayValue ?? [] {
                if let name = value.stringValue { names.insert(name) }
            }
        }
        return names
    }

    public struct Options {
        public var thresholds: VerificationThresholds
        /// Compare only tensors whose name matches one of these.
        public var only: [String]
        public var threads: Int
        public var progress: ProgressHandler?

        public init(thresholds: VerificationThresholds = .init(), only: [String] = [], threads: Int = defaultThreadCount,
                    progress: ProgressHandler? = nil) {
            self.thresholds = thresholds
            self.only = only
            self.threads = threads
            self.progress = progress
        }
    }

    /// Compares every tensor of `original` (those `options.only` selects)
    /// with its counterpart in `converted`.
    ///
    /// - Throws: `VerificationError` when the two do not hold the same
    ///   tensors with the same shapes, the readers' errors (a checksum).
    public static func compare(original: Model, converted: Model, options: Options) throws -> VerificationReport {
        let patterns = try NamePatterns(options.only)
        func selected(_ name: String) -> Bool { patterns.isEmpty || patterns.matches(name) }
        // Both sides must hold the same tensors with the same shapes.
        for tensor in converted.tensors where original.tensor(named: tensor.name) == nil && selected(tensor.name) {
            throw VerificationError.tensorMissing(file: original.path, tensor: tensor.name, presentIn: converted.path)
        }
        let tensors = original.tensors.filter { selected($0.name) }
        if tensors.isEmpty && !patterns.isEmpty { throw VerificationError.nothingSelected(patterns: options.only) }

        let comparison = TensorComparison(threads: options.threads, thresholds: options.thresholds,
                                          exactRaw: converted.format.storesQuantizedTensors,
                                          merged: mergedTensorNames(in: converted.provenance))
        let progress = ProgressCounter(label: "verify", total: tensors.reduce(0) { $0 + UInt64($1.info.byteCount) }, handler: options.progress)
        defer { progress.finish() }
        var results: [VerificationReport.Tensor] = []
        for tensor in tensors {
            guard let other = converted.tensor(named: tensor.name) else {
                throw VerificationError.tensorMissing(file: converted.path, tensor: tensor.name, presentIn: original.path)
            }
            guard other.info.shape == tensor.info.shape else {
                throw VerificationError.shapeMismatch(tensor: tensor.name, original: tensor.info.shapeDescription, converted: other.info.shapeDescription)
            }
            var result = try comparison.compare(tensor, other)
            result.scheme = converted.format.storesQuantizedTensors ? other.scheme.name : "safetensors"
            results.append(result)
            progress.advance(by: UInt64(tensor.info.byteCount), item: tensor.name)
        }
        return VerificationReport(original: original.path, converted: converted.path, thresholds: options.thresholds, tensors: results)
    }
}

/// How `RoundTripVerifier` compares one pair of tensors, with the buffers
/// it reuses for every pair.
final class TensorComparison {
    let threads: Int
    let thresholds: VerificationThresholds
    /// Raw tensors of the converted side must be copies (it is a quantized format).
    let exactRaw: Bool
    /// Raw tensors a merge rewrote, measured instead.
    let merged: Set<String>
    let left: ChunkBuffers
    let right: ChunkBuffers

    init(threads: Int, thresholds: VerificationThresholds, exactRaw: Bool, merged: Set<String>) {
        self.threads = threads
        self.thresholds = thresholds
        self.exactRaw = exactRaw
        self.merged = merged
        // Tiles of float32 on each side; raw bytes are compared in pieces of 1 MB.
        let size = ChunkBuffers.Size(floats: ChunkPlan.defaultTileElements, bytes: 0, scratch: 1 << 20)
        left = ChunkBuffers(threads: threads, size: size)
        right = ChunkBuffers(threads: threads, size: size)
    }

    func compare(_ original: ModelTensor, _ converted: ModelTensor) throws -> VerificationReport.Tensor {
        var result = VerificationReport.Tensor(name: original.name, dtype: original.info.dtype, shape: original.info.shape,
                                               scheme: converted.scheme.name, metrics: nil, identical: nil, violations: [])
        let bothFloat = original.info.dtype.isDecodableToFloat && converted.info.dtype.isDecodableToFloat
        // A raw tensor of a quantized format is a copy, unless a merge rewrote it or it
        // was stored in another float dtype on purpose (kept tensors made smaller).
        let copied = exactRaw && !merged.contains(converted.name) && converted.info.dtype == original.info.dtype
        if case .raw = converted.scheme, let originalBytes = original.rawStored, !bothFloat || copied {
            let same = try bytesEqual(originalBytes, converted.parts[0]) && converted.info.dtype == original.info.dtype
            result.identical = same
            if !same { result.violations.append("not identical (stored raw, must round-trip exactly)") }
            // Identical bytes are an exact match: no need to compare values.
            if bothFloat {
                result.metrics = same ? ErrorMetrics(exactMatchOf: original.info.elementCount)
                    : try measure(try original.values(), try converted.values(checkingInOrder: true))
            }
        } else if bothFloat {
            let metrics = try measure(try original.values(), try converted.values(checkingInOrder: true))
            result.metrics = metrics
            result.violations = thresholds.violations(of: metrics)
            result.approximated = converted.scheme.isQuantized || !metrics.isExact
        }
        return result
    }

    /// Streams both tensors in aligned chunks on all cores and accumulates the error metrics.
    func measure(_ original: FloatTensorSource, _ converted: FloatTensorSource) throws -> ErrorMetrics {
        let plan = ChunkPlan(elementCount: original.info.elementCount, unit: converted.alignment)
        let (a, b) = (left.fitting(ChunkBuffers.Size(floats: plan.tile, bytes: 0, scratch: original.scratchBytes(for: plan.tile))),
                      right.fitting(ChunkBuffers.Size(floats: plan.tile, bytes: 0, scratch: converted.scratchBytes(for: plan.tile))))
        var total = ErrorMetrics()
        let partial = SlotValues(slots: a.slots, initial: ErrorMetrics())
        // A decoder that left its checksum to the reader is checked in order, here.
        let checked = converted as? SequentiallyCheckedSource
        try computeChunksInOrder(count: plan.chunkCount, slots: a.slots, threads: threads, compute: { c, slot in
            let x = a.floats(slot).baseAddress!, y = b.floats(slot).baseAddress!
            var metrics = ErrorMetrics()
            // A tile at a time, so that both sides are still in the core's
            // cache when the metrics read them.
            for tile in plan.tiles(of: plan.chunkRange(c)) {
                try original.readFloats(tile, into: x, scratch: a.scratch(slot))
                try converted.readFloats(tile, into: y, scratch: b.scratch(slot))
                metrics.add(original: UnsafeBufferPointer(start: x, count: tile.count), reconstructed: UnsafeBufferPointer(start: y, count: tile.count))
            }
            partial[slot] = metrics
        }, inOrder: { c, slot in
            total.merge(partial[slot])
            try checked?.checkBytes(before: plan.chunkRange(c).upperBound)
        })
        try checked?.finishChecks()
        return total
    }

    /// Whether a stored tensor and a stored part hold the same bytes,
    /// compared piece by piece on all cores; the part's checksum, when it has
    /// one, is checked on the way (in order, by the calling thread).
    func bytesEqual(_ a: StoredTensor, _ b: StoredPart) throws -> Bool {
        let total = Int(b.bytes.length)
        let step = min(left.size.scratch, right.size.scratch)
        let sameLength = a.info.byteCount == total
        var equal = sameLength
        let chunkEqual = SlotValues(slots: left.slots, initial: true)
        var hasher = XXHash64()
        let piece = { (c: Int) in c * step..<min(total, (c + 1) * step) }
        try computeChunksInOrder(count: divideRoundingUp(total, step), slots: left.slots, threads: threads, compute: { c, slot in
            let range = piece(c)
            let y = UnsafeMutableRawBufferPointer(rebasing: right.scratch(slot)[0..<range.count])
            try b.bytes.file.read(at: b.bytes.offset + UInt64(range.lowerBound), into: y)
            guard sameLength else { return }
            let x = UnsafeMutableRawBufferPointer(rebasing: left.scratch(slot)[0..<range.count])
            try a.readBytes(at: range.lowerBound, into: x)
            chunkEqual[slot] = memcmp(x.baseAddress!, y.baseAddress!, range.count) == 0
        }, inOrder: { c, slot in
            if b.bytes.checksum != nil { hasher.update(UnsafeRawBufferPointer(rebasing: right.scratch(slot)[0..<piece(c).count])) }
            equal = equal && chunkEqual[slot]
        })
        if b.bytes.checksum != nil { try b.bytes.check(hasher.digest()) }
        return equal
    }
}
