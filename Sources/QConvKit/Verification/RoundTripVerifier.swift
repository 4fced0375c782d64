import Glibc

/// `verify ORIGINAL CONVERTED`: streams both sides and measures how much each
/// tensor changed. Tensors a container stores raw must be byte-identical,
/// except those its provenance says a merge rewrote (`merge-lora` into a
/// container records them under `merged_adapter.tensors`): a merged tensor
/// is not a copy of any original, so it is measured like a quantized one.
public enum RoundTripVerifier {
    /// The provenance member `merge-lora` adds to a container it writes.
    public static let mergeProvenanceKey = "merged_adapter"

    /// Names of the tensors that merges rewrote, from every `merged_adapter`
    /// member of the container's provenance (one per merge, in order).
    public static func mergedTensorNames(in header: ContainerHeader) -> Set<String> {
        var names = Set<String>()
        for member in header.provenance.members where member.key == mergeProvenanceKey {
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
        /// No progress line (`--quiet`, `--json`, or a check run inside another command's report).
        public var quiet: Bool

        public init(thresholds: VerificationThresholds = .init(), only: [String] = [], threads: Int = defaultThreadCount, quiet: Bool = true) {
            self.thresholds = thresholds
            self.only = only
            self.threads = threads
            self.quiet = quiet
        }
    }

    static let chunkElements = 1 << 20
    /// Elements of each side read and compared at once (64 KB of floats).
    static let tileElements = 1 << 14

    public static func compare(original: Checkpoint, converted: ConvertedCheckpoint, options: Options) throws -> VerificationReport {
        let patterns = try options.only.map { pattern -> Regex<AnyRegexOutput> in
            do { return try Regex(pattern) } catch { throw UsageError("invalid regular expression '\(pattern)': \(error)") }
        }
        func selected(_ name: String) -> Bool { patterns.isEmpty || patterns.contains { name.contains($0) } }

        // Both sides must hold the same tensors with the same shapes.
        let originalNames = Set(original.tensors.map(\.name))
        for name in converted.tensorNames where !originalNames.contains(name) && selected(name) {
            throw VerificationError.tensorMissing(file: original.path, tensor: name, presentIn: converted.path)
        }
        let tensors = original.tensors.filter { selected($0.name) }
        if tensors.isEmpty && !patterns.isEmpty { throw VerificationError.nothingSelected(patterns: options.only) }

        let slots = max(2, options.threads * 2)
        let left = ChunkBuffers(slots: slots, floats: chunkElements, bytes: 0, scratch: chunkElements * 8)
        let right = ChunkBuffers(slots: slots, floats: chunkElements, bytes: 0, scratch: chunkElements * 8)
        var mergedRaw = Set<String>()
        if case .container(let container) = converted { mergedRaw = mergedTensorNames(in: container.header) }
        var results: [VerificationReport.Tensor] = []
        let progress = Progress(label: "verify", total: tensors.reduce(0) { $0 + UInt64($1.info.byteCount) }, quiet: options.quiet)
        defer { progress.finish() }
        for tensor in tensors {
            guard let (info, scheme) = converted.describe(tensor.name) else {
                throw VerificationError.tensorMissing(file: converted.path, tensor: tensor.name, presentIn: original.path)
            }
            guard info.shape == tensor.info.shape else {
                throw VerificationError.shapeMismatch(tensor: tensor.name, original: tensor.info.shapeDescription, converted: info.shapeDescription)
            }
            var result = VerificationReport.Tensor(name: tensor.name, dtype: tensor.info.dtype, shape: tensor.info.shape,
                                                   scheme: scheme, metrics: nil, identical: nil, violations: [])
            let convertedSource: FloatTensorSource?
            var exactCopy: StoredTensor?
            switch converted {
            case .container(let container):
                guard let stored = container.tensor(named: tensor.name) else { continue }
                if stored.scheme == .raw {
                    // Checksums are checked on the way by the decoder below or here.
                    try container.verifyChecksum(stored.parts[0], of: stored.name, buffer: left.scratch(0))
                    let raw = container.stored(stored.parts[0], of: stored.name)
                    if mergedRaw.contains(stored.name) && raw.info.dtype.isDecodableToFloat && tensor.info.dtype.isDecodableToFloat {
                        convertedSource = raw
                    } else {
                        exactCopy = raw
                        convertedSource = nil
                    }
                } else {
                    convertedSource = try ContainerTensorDecoder(container: container, tensor: stored, buffer: left.scratch(0))
                }
            case .safetensors(let checkpoint):
                guard let stored = checkpoint.tensor(named: tensor.name) else { continue }
                if stored.info.dtype.isDecodableToFloat && tensor.info.dtype.isDecodableToFloat {
                    convertedSource = stored.stored
                } else {
                    exactCopy = stored.stored
                    convertedSource = nil
                }
            }
            if let exactCopy {
                let same = try exactCopy.info.dtype == tensor.info.dtype
                    && bytesEqual(tensor.stored, exactCopy, left.scratch(0), right.scratch(0))
                result.identical = same
                if !same { result.violations.append("not identical (stored raw, must round-trip exactly)") }
                if tensor.info.dtype.isDecodableToFloat && exactCopy.info.dtype.isDecodableToFloat {
                    result.metrics = try measure(tensor.stored, exactCopy, left: left, right: right, threads: options.threads)
                }
            } else if let convertedSource {
                let metrics = try measure(tensor.stored, convertedSource, left: left, right: right, threads: options.threads)
                result.metrics = metrics
                result.violations = options.thresholds.violations(of: metrics)
            }
            results.append(result)
            progress.advance(by: UInt64(tensor.info.byteCount), item: tensor.name)
        }
        return VerificationReport(original: original.path, converted: converted.path, thresholds: options.thresholds, tensors: results)
    }

    /// Streams both tensors in aligned chunks on all cores and accumulates the error metrics.
    static func measure(_ original: FloatTensorSource, _ converted: FloatTensorSource,
                        left: ChunkBuffers, right: ChunkBuffers, threads: Int) throws -> ErrorMetrics {
        let n = original.info.elementCount
        let chunk = converted.chunkElements(limit: left.floatCapacity)
        let tile = min(chunk, converted.chunkElements(limit: tileElements))
        let (a, b) = chunk <= left.floatCapacity ? (left, right)
            : (ChunkBuffers(slots: left.slots, floats: chunk, bytes: 0, scratch: chunk * 8),
               ChunkBuffers(slots: left.slots, floats: chunk, bytes: 0, scratch: chunk * 8))
        var total = ErrorMetrics()
        var partial = [ErrorMetrics](repeating: ErrorMetrics(), count: a.slots)
        try partial.withUnsafeMutableBufferPointer { partial in
            try processChunksInBatches(chunkCount: (n + chunk - 1) / chunk, slots: a.slots, threads: threads, compute: { c, slot in
                let range = c * chunk..<min(n, (c + 1) * chunk)
                let x = a.floats(slot).baseAddress!, y = b.floats(slot).baseAddress!
                var metrics = ErrorMetrics()
                // A tile at a time, so that both sides are still in the core's
                // cache when the metrics read them.
                for start in stride(from: range.lowerBound, to: range.upperBound, by: tile) {
                    let tileRange = start..<min(range.upperBound, start + tile)
                    try original.readFloats(tileRange, into: x, scratch: a.scratch(slot))
                    try converted.readFloats(tileRange, into: y, scratch: b.scratch(slot))
                    metrics.add(original: UnsafeBufferPointer(start: x, count: tileRange.count),
                                reconstructed: UnsafeBufferPointer(start: y, count: tileRange.count))
                }
                partial[slot] = metrics
            }, emit: { _, slot in
                total.merge(partial[slot])
            })
        }
        return total
    }

    static func bytesEqual(_ a: StoredTensor, _ b: StoredTensor, _ bufferA: UnsafeMutableRawBufferPointer, _ bufferB: UnsafeMutableRawBufferPointer) throws -> Bool {
        guard a.info.byteCount == b.info.byteCount else { return false }
        var offset = 0
        let total = a.info.byteCount
        let step = min(bufferA.count, bufferB.count)
        while offset < total {
            let n = min(step, total - offset)
            let x = UnsafeMutableRawBufferPointer(rebasing: bufferA[0..<n]), y = UnsafeMutableRawBufferPointer(rebasing: bufferB[0..<n])
            try a.readBytes(at: offset, into: x)
            try b.readBytes(at: offset, into: y)
            if memcmp(x.baseAddress!, y.baseAddress!, n) != 0 { return false }
            offset += n
        }
        return true
    }
}
