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
        let patterns = try NamePatterns(options.only)
        func selected(_ name: String) -> Bool { patterns.isEmpty || patterns.matches(name) }

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
            /// The container part `exactCopy` is, whose checksum the comparison checks on the way.
            var checksum: (container: ContainerFile, part: ContainerPart, tensor: String)?
            switch converted {
            case .container(let container):
                guard let stored = container.tensor(named: tensor.name) else { continue }
                if stored.scheme == .raw {
                    let raw = container.stored(stored.parts[0], of: stored.name)
                    if mergedRaw.contains(stored.name) && raw.info.dtype.isDecodableToFloat && tensor.info.dtype.isDecodableToFloat {
                        // Checksums are checked on the way by the decoder below or here.
                        try container.verifyChecksum(stored.parts[0], of: stored.name, buffer: left.scratch(0))
                        convertedSource = raw
                    } else {
                        exactCopy = raw
                        checksum = (container, stored.parts[0], stored.name)
                        convertedSource = nil
                    }
                } else {
                    // The decoder's checksum is checked on the way (`measure`).
                    convertedSource = try ContainerTensorDecoder(container: container, tensor: stored, buffer: left.scratch(0), checkingInOrder: true)
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
                let same = try bytesEqual(tensor.stored, exactCopy, checksum: checksum, left: left, right: right, threads: options.threads)
                    && exactCopy.info.dtype == tensor.info.dtype
                result.identical = same
                if !same { result.violations.append("not identical (stored raw, must round-trip exactly)") }
                if tensor.info.dtype.isDecodableToFloat && exactCopy.info.dtype.isDecodableToFloat {
                    // Identical bytes are an exact match: no need to compare values.
                    result.metrics = same ? ErrorMetrics(exactMatchOf: tensor.info.elementCount)
                        : try measure(tensor.stored, exactCopy, left: left, right: right, threads: options.threads)
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
        // A container decoder that left its checksum to the reader is checked in order, here.
        let decoder = converted as? ContainerTensorDecoder
        let checkBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SequentialWriter.bufferSize, alignment: 64)
        defer { checkBuffer.deallocate() }
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
            }, emit: { c, slot in
                total.merge(partial[slot])
                try decoder?.checkBytes(before: min(n, (c + 1) * chunk), buffer: checkBuffer)
            })
        }
        try decoder?.finishChecks(buffer: checkBuffer)
        return total
    }

    /// Whether two stored tensors hold the same bytes, compared chunk by chunk
    /// on all cores. With `checksum`, `b` is that container part, and its
    /// checksum is checked on the way (in order, by the calling thread).
    static func bytesEqual(_ a: StoredTensor, _ b: StoredTensor, checksum: (container: ContainerFile, part: ContainerPart, tensor: String)?,
                           left: ChunkBuffers, right: ChunkBuffers, threads: Int) throws -> Bool {
        let total = b.info.byteCount
        // 1 MB pieces: the scratch buffers are larger, but touching all of them would only grow the RSS.
        let step = min(left.scratch(0).count, right.scratch(0).count, 1 << 20)
        let sameLength = a.info.byteCount == total
        var equal = sameLength
        var chunkEqual = [Bool](repeating: true, count: left.slots)
        var hasher = XXHash64()
        try chunkEqual.withUnsafeMutableBufferPointer { chunkEqual in
            try processChunksInBatches(chunkCount: (total + step - 1) / step, slots: left.slots, threads: threads, compute: { c, slot in
                let range = c * step..<min(total, (c + 1) * step)
                let y = UnsafeMutableRawBufferPointer(rebasing: right.scratch(slot)[0..<range.count])
                try b.readBytes(at: range.lowerBound, into: y)
                guard sameLength else { return }
                let x = UnsafeMutableRawBufferPointer(rebasing: left.scratch(slot)[0..<range.count])
                try a.readBytes(at: range.lowerBound, into: x)
                chunkEqual[slot] = memcmp(x.baseAddress!, y.baseAddress!, range.count) == 0
            }, emit: { c, slot in
                let count = min(total, (c + 1) * step) - c * step
                if checksum != nil { hasher.update(UnsafeRawBufferPointer(rebasing: right.scratch(slot)[0..<count])) }
                equal = equal && chunkEqual[slot]
            })
        }
        if let (container, part, tensor) = checksum {
            let actual = hasher.digest()
            guard actual == part.checksum else { throw container.checksumError(part, tensor: tensor, actual: actual) }
        }
        return equal
    }
}
