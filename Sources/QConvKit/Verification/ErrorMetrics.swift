import Foundation

/// How far a reconstructed tensor is from its original, accumulated over chunks.
///
/// Sums are kept in Double (blocks of 256 elements are summed in float32
/// first, see `add`). For parallel work give each chunk its own
/// accumulator and `merge` them; the result equals one pass over all elements
/// up to the rounding of the sums.
///
/// Edge cases:
/// - No elements: everything is exact (errors 0, SQNR +inf, cosine 1).
/// - Identical tensors (zero error), including all-zero ones: max error 0,
///   RMSE 0, relative RMSE 0, SQNR +inf, cosine 1.
/// - All-zero original with a nonzero error: relative RMSE +inf, SQNR -inf,
///   cosine 0 (a zero vector is taken as orthogonal to any other).
/// - NaN in either tensor makes every figure NaN (IEEE arithmetic carries it
///   through the sums), so threshold checks such as `rmse <= limit` fail;
///   infinities give infinite or NaN figures the same way.
public struct ErrorMetrics: Equatable, Sendable {
    /// Number of elements compared.
    public private(set) var elementCount: Int = 0
    /// Sum of (original - reconstructed)^2.
    public private(set) var sumSquaredError: Double = 0
    /// Sum of original^2.
    public private(set) var sumSquaredOriginal: Double = 0
    /// Sum of reconstructed^2.
    public private(set) var sumSquaredReconstructed: Double = 0
    /// Sum of original * reconstructed.
    public private(set) var dotProduct: Double = 0
    /// Largest |original - reconstructed| seen; see `maxAbsoluteError`.
    private var largestError: Double = 0

    /// No elements yet: exact.
    public init() {}

    /// Elements summed in float32 before the sums are carried to Double: few
    /// enough (32 per lane) that float32 rounding stays near one part in 10^6.
    static let blockElements = 256

    /// Compares two chunks of equal length, element by element.
    ///
    /// Blocks of `blockElements` are summed in float32 lanes (twice as many
    /// lanes per instruction as Double) and each block's sums are added to
    /// the Double totals. A block whose float32 sums are not finite (values
    /// beyond about 1e19, or NaN and infinity) is summed again in Double, so
    /// that only values that are themselves non-finite make the figures so.
    public mutating func add(original: UnsafeBufferPointer<Float>, reconstructed: UnsafeBufferPointer<Float>) {
        precondition(original.count == reconstructed.count, "ErrorMetrics.add: \(original.count) original vs \(reconstructed.count) reconstructed values")
        guard let a = original.baseAddress, let b = reconstructed.baseAddress else { return }
        let count = original.count
        var largest = SIMD8<Float>()
        var index = 0
        while index < count {
            let width = min(Self.blockElements, count - index)
            if !addBlockInFloat(a + index, b + index, count: width, largest: &largest) {
                addBlockInDouble(a + index, b + index, count: width)
            }
            index += width
        }
        elementCount += count
        largestError = Swift.max(largestError, Double(largest.max()))
    }

    /// One block in float32; false (and nothing added) when a sum is not finite.
    @inline(__always)
    private mutating func addBlockInFloat(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                                          largest: inout SIMD8<Float>) -> Bool {
        let lanes = SIMD8<Float>.scalarCount
        var squaredError = SIMD8<Float>(), squaredA = SIMD8<Float>(), squaredB = SIMD8<Float>(), dot = SIMD8<Float>()
        var blockLargest = SIMD8<Float>()
        var index = 0
        while index < count {
            // Padding lanes are 0 in both tensors and contribute nothing.
            let width = min(lanes, count - index)
            let x = Int8Vectorwise.loadPadded(UnsafeRawPointer(a), from: index, width: width, as: Float.self)
            let y = Int8Vectorwise.loadPadded(UnsafeRawPointer(b), from: index, width: width, as: Float.self)
            // x - y is exact where the two are within a factor of two of each other (Sterbenz).
            let error = x - y
            squaredError += error * error
            squaredA += x * x
            squaredB += y * y
            dot += x * y
            let magnitude = unsafeBitCast(unsafeBitCast(error, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: SIMD8<Float>.self)
            blockLargest.replace(with: magnitude, where: magnitude .> blockLargest)
            index += width
        }
        let e = squaredError.sum(), x = squaredA.sum(), y = squaredB.sum(), d = dot.sum()
        guard e.isFinite && x.isFinite && y.isFinite && d.isFinite else { return false }
        sumSquaredError += Double(e)
        sumSquaredOriginal += Double(x)
        sumSquaredReconstructed += Double(y)
        dotProduct += Double(d)
        largest.replace(with: blockLargest, where: blockLargest .> largest)
        return true
    }

    /// One block in Double (overflowing float32 sums, NaN and infinities).
    private mutating func addBlockInDouble(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let x = Double(a[i]), y = Double(b[i])
            let error = x - y
            sumSquaredError += error * error
            sumSquaredOriginal += x * x
            sumSquaredReconstructed += y * y
            dotProduct += x * y
            // A NaN error is not kept here; it reaches `sumSquaredError`, which
            // `maxAbsoluteError` checks.
            if abs(error) > largestError { largestError = abs(error) }
        }
    }

    /// Folds in the figures of other elements (another chunk or tensor).
    public mutating func merge(_ other: ErrorMetrics) {
        elementCount += other.elementCount
        sumSquaredError += other.sumSquaredError
        sumSquaredOriginal += other.sumSquaredOriginal
        sumSquaredReconstructed += other.sumSquaredReconstructed
        dotProduct += other.dotProduct
        largestError = Swift.max(largestError, other.largestError)
    }

    /// Largest |original - reconstructed|; NaN when any error was NaN.
    public var maxAbsoluteError: Double { sumSquaredError.isNaN ? .nan : largestError }

    /// Root mean square error; 0 with no elements.
    public var rmse: Double { elementCount == 0 ? 0 : (sumSquaredError / Double(elementCount)).squareRoot() }

    /// RMSE / RMS(original), i.e. sqrt(sum error^2 / sum original^2).
    public var relativeRMSE: Double {
        sumSquaredError == 0 ? 0 : (sumSquaredError / sumSquaredOriginal).squareRoot()
    }

    /// True when every element compared equal (the error sum is exactly 0),
    /// including with no elements. This is what tells an infinite SQNR of an
    /// exact match (+inf) from the worst cases (-inf, NaN) where a report
    /// cannot write infinities, as in JSON.
    public var isExact: Bool { sumSquaredError == 0 }

    /// Signal to quantization noise ratio, `10 log10(sum original^2 / sum error^2)`:
    /// +inf for an exact match, -inf for an all-zero original with a nonzero
    /// error, NaN when a NaN or infinity reached the sums.
    public var sqnrDecibels: Double {
        if sumSquaredError == 0 { return .infinity }
        return 10 * log10(sumSquaredOriginal / sumSquaredError)
    }

    /// Cosine of the angle between the tensors as vectors, in [-1, 1].
    public var cosineSimilarity: Double {
        if sumSquaredError == 0 { return 1 }
        if sumSquaredError.isNaN { return .nan }
        if sumSquaredOriginal == 0 || sumSquaredReconstructed == 0 { return 0 }
        var norms = (sumSquaredOriginal * sumSquaredReconstructed).squareRoot()
        if norms.isInfinite { norms = sumSquaredOriginal.squareRoot() * sumSquaredReconstructed.squareRoot() }
        let cosine = dotProduct / norms
        // Rounding may carry a parallel pair just past 1; NaN must stay NaN.
        return cosine.isNaN ? .nan : Swift.min(1, Swift.max(-1, cosine))
    }
}

/// Overall figures across tensors, weighted by element count: RMSE, relative
/// RMSE and SQNR from the summed squares of all tensors (as if they were one),
/// max error the largest, cosine the element-weighted mean of the per-tensor
/// cosines (a global cosine would be dominated by the largest-norm tensors).
public struct ErrorSummary: Equatable, Sendable {
    /// Number of tensors summarized.
    public let tensorCount: Int
    /// All tensors' sums folded together.
    public let total: ErrorMetrics
    /// Element-weighted mean of the per-tensor cosine similarities; 1 with no elements.
    public let cosineSimilarity: Double

    /// Folds the figures of each tensor together.
    public init(_ perTensor: [ErrorMetrics]) {
        tensorCount = perTensor.count
        var total = ErrorMetrics()
        var weightedCosine = 0.0
        for metrics in perTensor {
            total.merge(metrics)
            if metrics.elementCount > 0 { weightedCosine += Double(metrics.elementCount) * metrics.cosineSimilarity }
        }
        self.total = total
        cosineSimilarity = total.elementCount == 0 ? 1 : weightedCosine / Double(total.elementCount)
    }

    /// Elements over all tensors.
    public var elementCount: Int { total.elementCount }
    /// The largest absolute error of any tensor.
    public var maxAbsoluteError: Double { total.maxAbsoluteError }
    /// RMSE over all elements, as if the tensors were one.
    public var rmse: Double { total.rmse }
    /// Relative RMSE over all elements, as if the tensors were one.
    public var relativeRMSE: Double { total.relativeRMSE }
    /// SQNR over all elements, as if the tensors were one.
    public var sqnrDecibels: Double { total.sqnrDecibels }
    /// True when every tensor matched exactly (see `ErrorMetrics.isExact`).
    public var isExact: Bool { total.isExact }
}
