import XCTest
import QConvKit

final class ErrorMetricsTests: XCTestCase {

    /// [1, 2, 3, 4] vs [1, 2, 3, 5]: one error of 1 over 4 elements;
    /// sum original^2 = 30, sum reconstructed^2 = 39, dot = 34.
    func testHandComputedFigures() {
        let metrics = measure([1, 2, 3, 4], [1, 2, 3, 5])
        XCTAssertEqual(metrics.elementCount, 4)
        XCTAssertEqual(metrics.maxAbsoluteError, 1)
        XCTAssertEqual(metrics.rmse, 0.5)
        XCTAssertEqual(metrics.relativeRMSE, 0.5 / 7.5.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(metrics.sqnrDecibels, 10 * log10(30.0), accuracy: 1e-12)
        XCTAssertEqual(metrics.cosineSimilarity, 34 / (30.0 * 39.0).squareRoot(), accuracy: 1e-15)
    }

    /// Signs matter: errors of -2 and +2 and an anti-parallel pair.
    func testNegativeErrorsAndOppositeVectors() {
        let metrics = measure([1, -1, 0.5], [-1, 1, -0.5])
        XCTAssertEqual(metrics.maxAbsoluteError, 2)
        XCTAssertEqual(metrics.rmse, ((4 + 4 + 1) / 3.0).squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(metrics.cosineSimilarity, -1)
        XCTAssertEqual(metrics.sqnrDecibels, 10 * log10(2.25 / 9), accuracy: 1e-12)
    }

    func testIdenticalTensorsAreExact() {
        let values: [Float] = [0.1, -0.2, 0.3, 1e-8, 7, -3, 0.25, 0.5, 1.5]
        let metrics = measure(values, values)
        XCTAssertEqual(metrics.maxAbsoluteError, 0)
        XCTAssertEqual(metrics.rmse, 0)
        XCTAssertEqual(metrics.relativeRMSE, 0)
        XCTAssertEqual(metrics.sqnrDecibels, .infinity)
        XCTAssertEqual(metrics.cosineSimilarity, 1)
    }

    func testAllZeroOriginal() {
        let exact = measure([0, 0, 0], [0, 0, 0])
        XCTAssertEqual(exact.relativeRMSE, 0)
        XCTAssertEqual(exact.sqnrDecibels, .infinity)
        XCTAssertEqual(exact.cosineSimilarity, 1)

        let wrong = measure([0, 0, 0, 0], [0, 2, 0, 0])
        XCTAssertEqual(wrong.maxAbsoluteError, 2)
        XCTAssertEqual(wrong.rmse, 1)
        XCTAssertEqual(wrong.relativeRMSE, .infinity)
        XCTAssertEqual(wrong.sqnrDecibels, -.infinity)
        XCTAssertEqual(wrong.cosineSimilarity, 0)
    }

    func testEmptyIsExact() {
        let metrics = ErrorMetrics()
        XCTAssertEqual(metrics.elementCount, 0)
        XCTAssertEqual(metrics.rmse, 0)
        XCTAssertEqual(metrics.relativeRMSE, 0)
        XCTAssertEqual(metrics.sqnrDecibels, .infinity)
        XCTAssertEqual(metrics.cosineSimilarity, 1)
    }

    func testNaNMakesEveryFigureNaN() {
        for (original, reconstructed) in [([1, Float.nan, 3], [1, 2, 3] as [Float]), ([1, 2, 3], [1, 2, .nan]), ([.infinity, 2, 3], [.infinity, 2, 3])] {
            let metrics = measure(original, reconstructed)
            XCTAssertTrue(metrics.maxAbsoluteError.isNaN)
            XCTAssertTrue(metrics.rmse.isNaN)
            XCTAssertTrue(metrics.relativeRMSE.isNaN)
            XCTAssertTrue(metrics.sqnrDecibels.isNaN)
            XCTAssertTrue(metrics.cosineSimilarity.isNaN)
            XCTAssertFalse(metrics.rmse <= 1, "a NaN figure must fail a threshold check")
        }
        let infinite = measure([1, 2, 3], [1, .infinity, 3])
        XCTAssertEqual(infinite.maxAbsoluteError, .infinity)
        XCTAssertEqual(infinite.rmse, .infinity)
        XCTAssertTrue(infinite.cosineSimilarity.isNaN)
    }

    /// 1,003 elements (not a multiple of the SIMD width) split unevenly.
    func testMergedChunksEqualOnePass() {
        let original = (0..<1003).map { Float(sin(Double($0) * 0.37)) }
        let reconstructed = original.enumerated().map { $0.element + Float(cos(Double($0.offset) * 1.3)) * 0.01 }
        let whole = measure(original, reconstructed)
        var merged = ErrorMetrics()
        for range in [0..<1, 1..<9, 9..<500, 500..<500, 500..<1003] {
            merged.merge(measure(Array(original[range]), Array(reconstructed[range])))
        }
        XCTAssertEqual(merged.elementCount, 1003)
        XCTAssertEqual(merged.maxAbsoluteError, whole.maxAbsoluteError)
        XCTAssertEqual(merged.rmse, whole.rmse, accuracy: 1e-13)
        XCTAssertEqual(merged.relativeRMSE, whole.relativeRMSE, accuracy: 1e-13)
        XCTAssertEqual(merged.sqnrDecibels, whole.sqnrDecibels, accuracy: 1e-10)
        XCTAssertEqual(merged.cosineSimilarity, whole.cosineSimilarity, accuracy: 1e-13)
        // The chunked pass is itself right: the largest error is the largest |cos| x 0.01.
        let expectedMax = zip(original, reconstructed).map { abs(Double($0) - Double($1)) }.max()!
        XCTAssertEqual(whole.maxAbsoluteError, expectedMax)
    }

    /// [1, 2, 3, 4] -> [1, 2, 3, 5] (4 elements, error^2 1, original^2 30,
    /// cosine 34 / sqrt(1170)) and an exact [2, 2] (2 elements, original^2 8, cosine 1).
    func testSummaryWeightsByElementCount() {
        let summary = ErrorSummary([measure([1, 2, 3, 4], [1, 2, 3, 5]), measure([2, 2], [2, 2])])
        XCTAssertEqual(summary.tensorCount, 2)
        XCTAssertEqual(summary.elementCount, 6)
        XCTAssertEqual(summary.maxAbsoluteError, 1)
        XCTAssertEqual(summary.rmse, (1 / 6.0).squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(summary.relativeRMSE, (1 / 38.0).squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(summary.sqnrDecibels, 10 * log10(38.0), accuracy: 1e-12)
        let firstCosine: Double = 34 / 1170.0.squareRoot()
        XCTAssertEqual(summary.cosineSimilarity, (4 * firstCosine + 2 * 1) / 6, accuracy: 1e-15)

        let empty = ErrorSummary([])
        XCTAssertEqual(empty.elementCount, 0)
        XCTAssertEqual(empty.cosineSimilarity, 1)
    }

    private func measure(_ original: [Float], _ reconstructed: [Float]) -> ErrorMetrics {
        var metrics = ErrorMetrics()
        original.withUnsafeBufferPointer { a in
            reconstructed.withUnsafeBufferPointer { b in metrics.add(original: a, reconstructed: b) }
        }
        return metrics
    }

    /// `isExact` is what tells an exact match's +inf SQNR from the worst cases,
    /// which a JSON report writes as null all the same.
    func testIsExactTellsInfiniteSQNRsApart() {
        let exact = measure([0, 1, 2], [0, 1, 2])
        XCTAssertTrue(exact.isExact)
        XCTAssertEqual(exact.sqnrDecibels, .infinity)
        let zeroOriginal = measure([0, 0, 0, 0], [0, 2, 0, 0])
        XCTAssertFalse(zeroOriginal.isExact)
        XCTAssertEqual(zeroOriginal.sqnrDecibels, -.infinity)
        let nan = measure([1, .nan], [1, .nan])
        XCTAssertFalse(nan.isExact)
        XCTAssertTrue(nan.sqnrDecibels.isNaN)
        XCTAssertTrue(ErrorMetrics().isExact)
        XCTAssertTrue(ErrorSummary([exact, ErrorMetrics()]).isExact)
        XCTAssertFalse(ErrorSummary([exact, zeroOriginal]).isExact)
        XCTAssertEqual(ErrorSummary([ErrorMetrics(), zeroOriginal]).sqnrDecibels, -.infinity)
    }
}
