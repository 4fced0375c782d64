import Foundation

/// How far a reconstructed tensor is from its original, accumulated over chunks.
///
/// Sums are kept in Double. For parallel work give each chunk its own
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

    /// `count` elements that compared equal bit for bit (what streaming them
    /// through `add` gives, without reading them).
    public init(exactMatchOf count: Int) {
        elementCount = count
    }

    /// Compares two chunks of equal length, element by element.
    public mutating func add(original: UnsafeBufferPointer<Float>, reconstructed: UnsafeBufferPointer<Float>) {
        precondition(original.count == reconstructed.count, "ErrorMetrics.add: \(original.count) original vs \(reconstructed.count) reconstructed values")
        guard let a = original.baseAddress, let b = reconstructed.baseAddress else { return }
        let count = original.count
        let lanes = SIMD8<Float>.scalarCount
        var squaredError = SIMD8<Double>(), squaredA = SIMD8<Double>(), squaredB = SIMD8<Double>(), dot = SIMD8<Double>()
        var largest = SIMD8<Double>()
        let zero = SIMD8<Double>()
        var index = 0
        while index < count {
            // Padding lanes are 0 in both tensors and contribute nothing.
            let width = min(lanes, count - index)
            let x = SIMDLanes.widen(SIMDLanes.loadPadded(UnsafeRawPointer(a), from: index, width: width, as: Float.self))
            let y = SIMDLanes.widen(SIMDLanes.loadPadded(UnsafeRawPointer(b), from: index, width: width, as: Float.self))
            let error = x - y
            // Multiply and add, not `addProduct`: without an FMA instruction in
            // the baseline target that becomes a libm call per lane.
            squaredError += error * error
            squaredA += x * x
            squaredB += y * y
            dot += x * y
            // A NaN error is not kept here; it reaches `sumSquaredError`, which
            // `maxAbsoluteError` checks.
            // Compared with a vector, not the scalar 0: that overload is generic
            // and compiles lane by lane.
            largest = SIMDLanes.larger(largest, error.replacing(with: -error, where: error .< zero))
            index += width
        }
        elementCount += count
        sumSquaredError += squaredError.sum()
        sumSquaredOriginal += squaredA.sum()
        sumSquaredReconstructed += squaredB.sum()
        dotProduct += dot.sum()
        largestError = Swift.max(largestError, largest.max())
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
