@testable import QConvKit
import XCTest

/// Householder QR, one-sided Jacobi SVD, and the two SVD merges built on
/// them, against decompositions known in closed form and against the SVD of
/// the full matrix.
final class SmallLinearAlgebraTests: XCTestCase {
    /// A matrix from rows.
    private func matrix(_ rows: [[Double]]) -> ColumnMatrix {
        var m = ColumnMatrix(rows: rows.count, columns: rows[0].count)
        for (i, row) in rows.enumerated() { for (j, value) in row.enumerated() { m[i, j] = value } }
        return m
    }

    private func random(_ rows: Int, _ columns: Int, seed: UInt64) -> ColumnMatrix {
        var m = ColumnMatrix(rows: rows, columns: columns)
        let key = SplitMix64.key(seed: seed, label: "matrix")
        for i in 0..<rows * columns { m.values[i] = SplitMix64.unit(key: key, index: UInt64(i)) * 2 - 1 }
        return m
    }

    private func assertClose(_ a: ColumnMatrix, _ b: ColumnMatrix, _ tolerance: Double, _ message: String = "", line: UInt = #line) {
        XCTAssertEqual(a.rows, b.rows, message, line: line)
        XCTAssertEqual(a.columns, b.columns, message, line: line)
        let worst = zip(a.values, b.values).reduce(0.0) { max($0, abs($1.0 - $1.1)) }
        XCTAssertLessThanOrEqual(worst, tolerance, message, line: line)
    }

    private func identity(_ n: Int) -> ColumnMatrix {
        var m = ColumnMatrix(rows: n, columns: n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }

    private func diagonal(_ s: [Double]) -> ColumnMatrix {
        var m = ColumnMatrix(rows: s.count, columns: s.count)
        for (i, value) in s.enumerated() { m[i, i] = value }
        return m
    }

    func testQRIsOrthonormalTimesUpperTriangular() {
        for (rows, columns) in [(7, 3), (3, 7), (50, 50), (200, 12), (1, 1)] {
            let a = random(rows, columns, seed: UInt64(rows * 100 + columns))
            let (q, r) = SmallLinearAlgebra.qr(a)
            let p = min(rows, columns)
            XCTAssertEqual(q.columns, p)
            XCTAssertEqual(r.rows, p)
            assertClose(q.transposed.multiplied(by: q), identity(p), 1e-13, "QᵀQ = I for \(rows)x\(columns)")
            assertClose(q.multiplied(by: r), a, 1e-13, "QR = A for \(rows)x\(columns)")
            for i in 0..<p { for j in 0..<min(i, columns) { XCTAssertEqual(r[i, j], 0, "R is upper triangular") } }
        }
        // A classic: [[12, -51, 4], [6, 167, -68], [-4, 24, -41]] = QR with R's diagonal ±14, ±175, ±35.
        let (_, r) = SmallLinearAlgebra.qr(matrix([[12, -51, 4], [6, 167, -68], [-4, 24, -41]]))
        XCTAssertEqual([abs(r[0, 0]), abs(r[1, 1]), abs(r[2, 2])].map { ($0 * 1e9).rounded() / 1e9 }, [14, 175, 35])
    }

    func testReflectingFourColumnsAtOnceGivesTheOneColumnBits() {
        // Lengths with and without an 8-value tail, column counts with and
        // without a group of four, and columns the reflection leaves alone
        // (orthogonal to v: a zero factor).
        for (length, count) in [(3, 5), (8, 4), (29, 9), (64, 7), (101, 13)] {
            var v = random(length, 1, seed: UInt64(length)).values
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            v = v.map { $0 / norm }
            var columns = random(length, count, seed: UInt64(length * 7 + count))
            columns.values.replaceSubrange(length..<2 * length, with: [Double](repeating: 0, count: length))
            var expected = columns
            expected.values.withUnsafeMutableBufferPointer { y in
                for c in 0..<count {
                    let target = y.baseAddress! + c * length
                    let factor = 2 * SmallLinearAlgebra.dot(v, target, count: length)
                    if factor != 0 { SmallLinearAlgebra.subtract(factor, times: v, from: target, count: length) }
                }
            }
            columns.values.withUnsafeMutableBufferPointer { y in
                SmallLinearAlgebra.reflect(v, length: length, columns: y.baseAddress!, count: count, stride: length)
            }
            XCTAssertEqual(columns.values.map(\.bitPattern), expected.values.map(\.bitPattern), "\(length) x \(count)")
        }
    }

    func testQROfRankDeficientAndZeroColumnsStaysOrthonormal() {
        var a = random(20, 6, seed: 9)
        for i in 0..<20 { a[i, 2] = 0; a[i, 4] = 2 * a[i, 1] - a[i, 0] }
        let (q, r) = SmallLinearAlgebra.qr(a)
        assertClose(q.transposed.multiplied(by: q), identity(6), 1e-13)
        assertClose(q.multiplied(by: r), a, 1e-13)
    }

    func testSVDOfKnownMatrices() {
        // [[3, 2, 2], [2, 3, -2]] has singular values 5 and 3.
        let a = matrix([[3, 2, 2], [2, 3, -2]])
        let (u, s, v) = SmallLinearAlgebra.svd(a)
        XCTAssertEqual(s[0], 5, accuracy: 1e-14)
        XCTAssertEqual(s[1], 3, accuracy: 1e-14)
        assertClose(u.multiplied(by: diagonal(s)).multiplied(by: v.transposed), a, 1e-14)
        // A diagonal matrix: its entries, sorted, in absolute value.
        let (_, d, _) = SmallLinearAlgebra.svd(matrix([[0, 0, 0], [0, -7, 0], [0, 0, 2]]))
        XCTAssertEqual(d, [7, 2, 0])
    }

    func testSVDOfRandomMatricesReconstructsThem() {
        for (rows, columns) in [(30, 8), (8, 30), (40, 40), (100, 3)] {
            let a = random(rows, columns, seed: UInt64(rows + 7 * columns))
            let (u, s, v) = SmallLinearAlgebra.svd(a)
            let p = min(rows, columns)
            XCTAssertEqual(s.count, p)
            XCTAssertEqual(s, s.sorted(by: >))
            assertClose(u.transposed.multiplied(by: u), identity(p), 1e-12, "UᵀU")
            assertClose(v.transposed.multiplied(by: v), identity(p), 1e-12, "VᵀV")
            assertClose(u.multiplied(by: diagonal(s)).multiplied(by: v.transposed), a, 1e-12, "USVᵀ = A for \(rows)x\(columns)")
        }
    }

    // MARK: - The SVD merges

    /// Two adapters' factors, as a combination loads them.
    private func loaded(rows: Int, columns: Int, ranks: [Int], weights: [Double]) -> [CombinedFactors.Loaded] {
        ranks.enumerated().map { index, rank in
            let key = SplitMix64.key(seed: UInt64(index), label: "factors")
            func value(_ i: Int) -> Float { Float(SplitMix64.unit(key: key, index: UInt64(i)) - 0.5) }
            return CombinedFactors.Loaded(down: (0..<rank * columns).map(value), up: (0..<rows * rank).map { value($0 + 1_000_000) },
                                          rank: rank, weight: weights[index], scale: 2, adapterIndex: index)
        }
    }

    /// The full delta `sum_i w_i s_i B_i A_i` (tests only).
    private func fullDelta(_ factors: [CombinedFactors.Loaded], rows: Int, columns: Int) -> ColumnMatrix {
        var m = ColumnMatrix(rows: rows, columns: columns)
        for f in factors {
            for i in 0..<rows { for j in 0..<columns { for k in 0..<f.rank {
                m[i, j] += Double(Float(f.weight)) * Double(Float(f.scale)) * Double(f.up[i * f.rank + k]) * Double(f.down[k * columns + j])
            } } }
        }
        return m
    }

    private func product(_ result: (up: [Float], down: [Float], rank: Int), rows: Int, columns: Int) -> ColumnMatrix {
        var m = ColumnMatrix(rows: rows, columns: columns)
        for i in 0..<rows { for j in 0..<columns { for k in 0..<result.rank {
            m[i, j] += Double(result.up[i * result.rank + k]) * Double(result.down[k * columns + j])
        } } }
        return m
    }

    /// The QR route gives the truncated SVD of the full matrix: the same
    /// singular values, the same best rank-k approximation.
    func testLowRankSVDIsTheTruncatedSVDOfTheSum() {
        for (rows, columns, ranks, k) in [(48, 40, [8, 8, 4], 8), (16, 64, [8, 4], 12), (30, 20, [4, 4], 20), (10, 12, [8, 8], 4)] {
            let factors = loaded(rows: rows, columns: columns, ranks: ranks, weights: [0.7, -0.4, 1.3])
            let delta = CombinedDelta(tensor: "t", loaded: factors, rows: rows, columns: columns, merge: .sum)
            let result = LowRankSVD.truncated(delta, rank: k)
            let full = fullDelta(factors, rows: rows, columns: columns)
            let (u, s, v) = SmallLinearAlgebra.svd(full)
            let kept = min(k, ranks.reduce(0, +), rows, columns)
            XCTAssertEqual(result.rank, kept)
            let best = u.leadingColumns(kept).multiplied(by: diagonal(Array(s.prefix(kept)))).multiplied(by: v.leadingColumns(kept).transposed)
            assertClose(product(result, rows: rows, columns: columns), best, 2e-6 * s[0], "\(rows)x\(columns) ranks \(ranks) k \(k)")
        }
    }

    /// Subspace iteration on the pruned merge gives the truncated SVD of the
    /// full pruned matrix (made here the slow way).
    func testPrunedDeltaSVDIsTheTruncatedSVDOfThePrunedMerge() throws {
        let rows = 28, columns = 36
        let factors = loaded(rows: rows, columns: columns, ranks: [5, 5], weights: [1, 0.6])
        for merge in [LoRATaskMerge.ties(density: 0.4, majoritySign: .total), .magnitudePrune(density: 0.7), .dareTies(density: 0.5, majoritySign: .frequency, seed: 3)] {
            let delta = CombinedDelta(tensor: "t", loaded: factors, rows: rows, columns: columns, merge: merge)
            let generator = try PrunedDeltaRows(delta, threads: 2)
            var full = [Float](repeating: 0, count: rows * columns)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: generator.scratchCount(for: rows * columns))
            defer { scratch.deallocate() }
            full.withUnsafeMutableBufferPointer { generator.rows(0..<rows, scratch: scratch, into: $0.baseAddress!) }
            var m = ColumnMatrix(rows: rows, columns: columns)
            for i in 0..<rows { for j in 0..<columns { m[i, j] = Double(full[i * columns + j]) } }
            XCTAssertGreaterThan(full.filter { $0 == 0 }.count, rows * columns / 20, "\(merge): pruned")
            let (u, s, v) = SmallLinearAlgebra.svd(m)
            for k in [3, 7] {
                let result = try PrunedDeltaSVD.truncated(delta, rank: k, threads: 2)
                let best = u.leadingColumns(k).multiplied(by: diagonal(Array(s.prefix(k)))).multiplied(by: v.leadingColumns(k).transposed)
                assertClose(product(result, rows: rows, columns: columns), best, 1e-6 * s[0], "\(merge) k \(k)")
                let oneThread = try PrunedDeltaSVD.truncated(delta, rank: k, threads: 1)
                XCTAssertEqual(oneThread.up, result.up, "the result does not depend on the threads")
                XCTAssertEqual(oneThread.down, result.down)
            }
        }
    }

    /// torch.quantile (linear interpolation) and torch's clamp(min, max).
    func testClampUsesTorchsQuantile() {
        XCTAssertEqual(SVDClamp.value(atQuantile: 0.4, of: [4, 1, 3, 2]), 2.2, accuracy: 1e-6)
        XCTAssertEqual(SVDClamp.value(atQuantile: 1, of: [4, 1, 3, 2]), 4)
        XCTAssertEqual(SVDClamp.value(atQuantile: 0, of: [4, 1, 3, 2]), 1)
        XCTAssertEqual(SVDClamp.value(atQuantile: 0.9, of: [-1, 5]), 4.4, accuracy: 1e-6)
        var up: [Float] = [-3, 0.5, 2], down: [Float] = [1, -1]
        SVDClamp.apply(quantile: 0.5, up: &up, down: &down)
        XCTAssertEqual(up, [-0.5, 0.5, 0.5])
        XCTAssertEqual(down, [0.5, -0.5])
        // A negative quantile: min > max, so every value becomes max (torch's clamp).
        up = [-3, -2]; down = [-1, 1]
        SVDClamp.apply(quantile: 0.1, up: &up, down: &down)
        XCTAssertEqual(up + down, [Float](repeating: up[0], count: 4))
        XCTAssertLessThan(up[0], 0)
    }
}
