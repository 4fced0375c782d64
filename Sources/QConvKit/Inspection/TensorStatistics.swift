/// Summary statistics of one tensor, computed by streaming its data.
///
/// min, max, mean, std and absmax are over finite elements; NaN and infinite
/// elements are counted separately. `std` is the population standard deviation.
public struct TensorStatistics: Equatable, Sendable {
    public var count = 0
    public var finiteCount = 0
    public var nanCount = 0
    public var infinityCount = 0
    public var min = Double.infinity
    public var max = -Double.infinity
    public var mean = 0.0
    /// Sum of squared deviations from the mean (Welford's M2).
    var squaredDeviations = 0.0

    public init() {}

    public var std: Double { finiteCount > 0 ? (squaredDeviations / Double(finiteCount)).squareRoot() : 0 }
    public var absmax: Double { finiteCount > 0 ? Swift.max(abs(min), abs(max)) : 0 }

    /// Adds a chunk of values.
    public mutating func add(_ values: UnsafeBufferPointer<Float>) {
        var chunk = TensorStatistics()
        chunk.count = values.count
        var sum = 0.0
        var low = Float.infinity
        var high = -Float.infinity
        for v in values {
            if v.isFinite {
                chunk.finiteCount += 1
                sum += Double(v)
                low = Swift.min(low, v)
                high = Swift.max(high, v)
            } else if v.isNaN {
                chunk.nanCount += 1
            } else {
                chunk.infinityCount += 1
            }
        }
        if chunk.finiteCount > 0 {
            chunk.mean = sum / Double(chunk.finiteCount)
            var m2 = 0.0
            for v in values where v.isFinite {
                let d = Double(v) - chunk.mean
                m2 += d * d
            }
            chunk.squaredDeviations = m2
            chunk.min = Double(low)
            chunk.max = Double(high)
        }
        merge(chunk)
    }

    /// Combines statistics of two disjoint parts (Chan et al.'s parallel update).
    public mutating func merge(_ other: TensorStatistics) {
        count += other.count
        nanCount += other.nanCount
        infinityCount += other.infinityCount
        guard other.finiteCount > 0 else { return }
        let n1 = Double(finiteCount), n2 = Double(other.finiteCount)
        let delta = other.mean - mean
        let n = n1 + n2
        mean += delta * n2 / n
        squaredDeviations += other.squaredDeviations + delta * delta * n1 * n2 / n
        finiteCount += other.finiteCount
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
    }

    /// Streams `tensor` in chunks; nil when its dtype has no float decoding.
    public static func compute(_ tensor: FloatTensorSource, chunkElements: Int = ChunkPlan.defaultChunkElements) throws -> TensorStatistics? {
        guard tensor.info.dtype.isDecodableToFloat else { return nil }
        let total = tensor.info.elementCount
        let chunk = ChunkPlan(elementCount: total, unit: tensor.alignment, chunkLimit: chunkElements).chunk
        let floats = UnsafeMutableBufferPointer<Float>.allocate(capacity: Swift.max(1, Swift.min(chunk, total)))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(1, tensor.scratchBytes(for: floats.count)), alignment: 64)
        defer { floats.deallocate(); scratch.deallocate() }
        var statistics = TensorStatistics()
        var start = 0
        while start < total {
            let end = Swift.min(total, start + floats.count)
            try tensor.readFloats(start..<end, into: floats.baseAddress!, scratch: scratch)
            statistics.add(UnsafeBufferPointer(rebasing: floats[0..<(end - start)]))
            start = end
        }
        return statistics
    }

    public var json: JSONValue {
        .object([
            "min": finiteCount > 0 ? .double(min) : .null,
            "max": finiteCount > 0 ? .double(max) : .null,
            "mean": finiteCount > 0 ? .double(mean) : .null,
            "std": finiteCount > 0 ? .double(std) : .null,
            "absmax": finiteCount > 0 ? .double(absmax) : .null,
            "nan_count": .int(nanCount),
            "inf_count": .int(infinityCount),
        ])
    }
}
