/// The SVD methods that prune the deltas first (`ties_svd`,
/// `magnitude_prune_svd`, `dare_linear_svd`, `dare_ties_svd`): PEFT prunes
/// each full delta `s_i B_i A_i` element by element, so their merge `M` is no
/// longer of low rank and the QR route of `LowRankSVD` does not apply.
///
/// `M` is never held: its rows are computed block by block from the factors
/// (`PrunedDeltaRows`), as often as needed. The magnitude thresholds take two
/// passes over the deltas; the top singular vectors come from subspace
/// iteration on `M^T M` (one pass per iteration computes `Y = M X` and
/// `Z = M^T Y`), started from the top right singular vectors of the unpruned
/// sum, with a Rayleigh-Ritz step until the residuals of the top `k` Ritz
/// pairs are below 1e-8 of the largest eigenvalue. Then `M X = U S W^T` gives `B' = U_k S_k`
/// and `A' = (X W_k)^T`. Memory: `(out + in) x p` doubles, `p = max(k + 8, 2k)`
/// columns, and a few blocks of rows per thread; the result does not depend
/// on the number of threads.
enum PrunedDeltaSVD {
    static let tolerance = 1e-8
    static let maximumIterations = 300

    static func truncated(_ delta: CombinedDelta, rank: Int, threads: Int) throws -> (up: [Float], down: [Float], rank: Int) {
        let rows = delta.rows, columns = delta.columns
        let width = min(rows, columns, max(rank + 8, 2 * rank))
        let k = max(1, min(rank, width))
        let generator = try PrunedDeltaRows(delta, threads: threads)
        var subspace = startingSubspace(delta, width: width)
        for _ in 0..<maximumIterations {
            let (y, z) = try generator.project(subspace, threads: threads)
            let (u, s, w) = SmallLinearAlgebra.svd(y)
            guard let largest = s.first, largest > 0 else { return ([Float](repeating: 0, count: rows), [Float](repeating: 0, count: columns), 1) }
            if converged(subspace: subspace, z: z, singularValues: s, w: w, count: k, largest: largest) {
                return LowRankSVD.factors(left: u, singularValues: s, right: subspace.multiplied(by: w.leadingColumns(k)), rank: k)
            }
            subspace = SmallLinearAlgebra.qr(z).q
        }
        let (y, _) = try generator.project(subspace, threads: threads)
        let (u, s, w) = SmallLinearAlgebra.svd(y)
        return LowRankSVD.factors(left: u, singularValues: s, right: subspace.multiplied(by: w.leadingColumns(k)), rank: k)
    }

    /// Whether `||Z w_t - s_t^2 X w_t|| <= tolerance * s_0^2` for the top `count` Ritz pairs.
    private static func converged(subspace x: ColumnMatrix, z: ColumnMatrix, singularValues s: [Double], w: ColumnMatrix, count: Int,
                                  largest: Double) -> Bool {
        let top = w.leadingColumns(count)
        let gx = z.multiplied(by: top), xw = x.multiplied(by: top)
        for t in 0..<count {
            let lambda = s[t] * s[t]
            var residual = 0.0
            for i in 0..<x.rows {
                let r = gx[i, t] - lambda * xw[i, t]
                residual += r * r
            }
            if residual.squareRoot() > tolerance * largest * largest { return false }
        }
        return true
    }

    /// An orthonormal `columns x width` start: the top right singular vectors
    /// of the unpruned sum (`LowRankSVD`), whose pruned merge is close to it,
    /// completed with fixed pseudo-random columns.
    private static func startingSubspace(_ delta: CombinedDelta, width: Int) -> ColumnMatrix {
        let unpruned = LowRankSVD.truncated(delta, rank: width)
        var basis = ColumnMatrix(rows: delta.columns, columns: unpruned.rank)
        for t in 0..<unpruned.rank { for i in 0..<delta.columns { basis[i, t] = Double(unpruned.down[t * delta.columns + i]) } }
        var start = ColumnMatrix(rows: delta.columns, columns: width)
        let key = SplitMix64.key(seed: 0, label: "svd-start")
        for t in 0..<width {
            for i in 0..<delta.columns {
                start[i, t] = t < basis.columns ? basis[i, t] : SplitMix64.unit(key: key, index: UInt64(t * delta.columns + i)) - 0.5
            }
        }
        return SmallLinearAlgebra.qr(start).q
    }
}

/// Rows of the pruned, merged delta `M`, computed from the factors: row `o`
/// of each delta is `(B_i[o] . A_i) * s_i` in float32 (`LoRAKernels.addDelta`
/// with `FusedProducts`, as PEFT's `get_delta_weight` computes it), pruned (magnitude thresholds found once, in
/// two passes, or the DARE streams), then merged with the weights `w_i`.
struct PrunedDeltaRows {
    let delta: CombinedDelta
    let runner: TaskMergeRunner
    let weights: [Float]
    let scales: [Float]
    /// One per task for the magnitude merges.
    private(set) var thresholds: [Float] = []
    /// Rows per block: about 64K elements.
    let blockRows: Int

    init(_ delta: CombinedDelta, threads: Int) throws {
        self.delta = delta
        runner = TaskMergeRunner(merge: delta.merge, tensor: delta.tensor, part: "delta", adapterIndices: delta.loaded.map(\.adapterIndex))
        weights = delta.loaded.map { Float($0.weight) }
        scales = delta.loaded.map { Float($0.scale) }
        blockRows = max(1, min(delta.rows, (1 << 16) / max(1, delta.columns)))
        switch delta.merge {
        case .ties(let density, _), .magnitudePrune(let density):
            thresholds = try magnitudeThresholds(density: density, threads: threads)
        case .sum, .dareLinear, .dareTies:
            break
        }
    }

    private var blockCount: Int { divideRoundingUp(delta.rows, blockRows) }
    private func block(_ b: Int) -> Range<Int> { b * blockRows..<min(delta.rows, (b + 1) * blockRows) }

    /// Rows `range` of task `task`'s delta, unpruned, into `out`.
    func taskRows(_ task: Int, _ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let factor = delta.loaded[task], columns = delta.columns
        out.initialize(repeating: 0, count: range.count * columns)
        factor.up.withUnsafeBufferPointer { up in
            factor.down.withUnsafeBufferPointer { down in
                for row in range {
                    LoRAKernels.addDelta(up.baseAddress! + row * factor.rank, down.baseAddress!, rank: factor.rank, columns: columns,
                                         scale: scales[task], into: out + (row - range.lowerBound) * columns, FusedProducts.self)
                }
            }
        }
    }

    /// Floats of scratch `rows` needs for a range of `count` elements.
    func scratchCount(for count: Int) -> Int { (delta.loaded.count + 2) * count }

    /// Rows `range` of `M` into `out`; `scratch` holds `scratchCount` floats.
    func rows(_ range: Range<Int>, scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let count = range.count * delta.columns
        var tasks: [UnsafePointer<Float>] = []
        for task in delta.loaded.indices {
            let values = scratch + task * count
            taskRows(task, range, into: values)
            runner.prune(values, count: count, task: task, thresholds: thresholds, firstIndex: range.lowerBound * delta.columns)
            tasks.append(UnsafePointer(values))
        }
        runner.combine(tasks, weights: weights, count: count, scratch: scratch + delta.loaded.count * count, into: out)
    }

    /// The two passes of `MagnitudeSelection` over every delta, on stripes of
    /// blocks (counts do not depend on their order).
    private func magnitudeThresholds(density: Double, threads: Int) throws -> [Float] {
        let n = delta.loaded.count, elements = delta.rows * delta.columns
        var selections = (0..<n).map { _ in MagnitudeSelection(density: density, count: elements) }
        if selections[0].k == 0 { return [Float](repeating: .infinity, count: n) }
        let stripes = max(1, min(threads, blockCount))
        for pass in 0..<2 {
            let partial = Locked<[[MagnitudeSelection]]>([])
            try parallelFor(stripes, threads: threads) { stripe in
                var own = selections.map(\.emptyCopy)
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * delta.columns)
                defer { buffer.deallocate() }
                for b in stride(from: stripe, to: blockCount, by: stripes) {
                    let range = block(b)
                    for task in 0..<n {
                        taskRows(task, range, into: buffer)
                        own[task].add(buffer, count: range.count * delta.columns)
                    }
                }
                partial.withLock { $0.append(own) }
            }
            for own in partial.withLock({ $0 }) { for task in 0..<n { selections[task].merge(own[task]) } }
            if pass == 0 { for task in 0..<n { _ = selections[task].finishFirstPass() } }
        }
        return selections.map(\.threshold)
    }

    /// One pass: `Y = M X` (`rows x p`) and `Z = M^T Y` (`columns x p`), the
    /// blocks' contributions to `Z` added in block order.
    func project(_ x: ColumnMatrix, threads: Int) throws -> (y: ColumnMatrix, z: ColumnMatrix) {
        let columns = delta.columns, p = x.columns
        var y = ColumnMatrix(rows: delta.rows, columns: p)
        var z = [Double](repeating: 0, count: columns * p)
        let slots = max(1, min(blockCount, 2 * threads))
        let blockElements = blockRows * columns
        let perSlot = blockElements + scratchCount(for: blockElements)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: slots * perSlot)
        let partial = UnsafeMutablePointer<Double>.allocate(capacity: slots * columns * p)
        let yRows = UnsafeMutablePointer<Double>.allocate(capacity: slots * blockRows * p)
        defer { scratch.deallocate(); partial.deallocate(); yRows.deallocate() }
        try x.values.withUnsafeBufferPointer { basis in
            try computeChunksInOrder(count: blockCount, slots: slots, threads: threads, compute: { b, slot in
                let range = block(b)
                let m = scratch + slot * perSlot
                rows(range, scratch: m + blockElements, into: m)
                project(m, rows: range.count, basis: basis.baseAddress!, p: p, y: yRows + slot * blockRows * p, z: partial + slot * columns * p)
            }, inOrder: { b, slot in
                let range = block(b), slotY = yRows + slot * blockRows * p, slotZ = partial + slot * columns * p
                for t in 0..<p { for (i, row) in range.enumerated() { y[row, t] = slotY[i * p + t] } }
                for i in 0..<columns * p { z[i] += slotZ[i] }
            })
        }
        return (y, ColumnMatrix(rows: columns, columns: p, values: z))
    }

    /// For a block of `M` (`rows x columns` floats): its rows of `Y = M X`
    /// (`rows x p`, row-major) and its part of `Z = M^T Y` (`columns x p`,
    /// column-major). Rows go four at a time (a short group padded with
    /// zero rows), so that each column of `X` and `Z` is read once per four rows.
    private func project(_ m: UnsafePointer<Float>, rows: Int, basis x: UnsafePointer<Double>, p: Int, y: UnsafeMutablePointer<Double>,
                         z: UnsafeMutablePointer<Double>) {
        let columns = delta.columns
        z.initialize(repeating: 0, count: columns * p)
        let group = UnsafeMutablePointer<Double>.allocate(capacity: 4 * columns)
        defer { group.deallocate() }
        for first in stride(from: 0, to: rows, by: 4) {
            let count = min(4, rows - first)
            for r in 0..<4 {
                let target = group + r * columns
                if r < count {
                    let values = m + (first + r) * columns
                    for j in 0..<columns { target[j] = Double(values[j]) }
                } else {
                    target.initialize(repeating: 0, count: columns)
                }
            }
            for t in 0..<p {
                let dots = Self.dots(group, x + t * columns, count: columns)
                for r in 0..<count { y[(first + r) * p + t] = dots[r] }
                Self.addRows(group, times: dots, to: z + t * columns, count: columns)
            }
        }
    }

    /// The dot products of four consecutive rows (`count` doubles each) with `v`.
    @inline(__always)
    private static func dots(_ rows: UnsafePointer<Double>, _ v: UnsafePointer<Double>, count: Int) -> SIMD4<Double> {
        let r0 = rows, r1 = rows + count, r2 = rows + 2 * count, r3 = rows + 3 * count
        var a0 = SIMD4<Double>(), a1 = SIMD4<Double>(), a2 = SIMD4<Double>(), a3 = SIMD4<Double>()
        var j = 0
        while j + 4 <= count {
            let c = UnsafeRawPointer(v + j).loadUnaligned(as: SIMD4<Double>.self)
            a0 += UnsafeRawPointer(r0 + j).loadUnaligned(as: SIMD4<Double>.self) * c
            a1 += UnsafeRawPointer(r1 + j).loadUnaligned(as: SIMD4<Double>.self) * c
            a2 += UnsafeRawPointer(r2 + j).loadUnaligned(as: SIMD4<Double>.self) * c
            a3 += UnsafeRawPointer(r3 + j).loadUnaligned(as: SIMD4<Double>.self) * c
            j += 4
        }
        var result = SIMD4<Double>(a0.sum(), a1.sum(), a2.sum(), a3.sum())
        while j < count {
            result += SIMD4<Double>(r0[j], r1[j], r2[j], r3[j]) * v[j]
            j += 1
        }
        return result
    }

    /// `z += sum_r d[r] * row_r` for four consecutive rows (`count` doubles each).
    @inline(__always)
    private static func addRows(_ rows: UnsafePointer<Double>, times d: SIMD4<Double>, to z: UnsafeMutablePointer<Double>, count: Int) {
        let r0 = rows, r1 = rows + count, r2 = rows + 2 * count, r3 = rows + 3 * count
        for j in 0..<count { z[j] += d[0] * r0[j] + d[1] * r1[j] + d[2] * r2[j] + d[3] * r3[j] }
    }
}
