/// A dense matrix of doubles stored column by column (`values[c * rows + r]`):
/// tall matrices whose columns are the working vectors of a QR or an SVD.
struct ColumnMatrix: Equatable {
    let rows: Int
    let columns: Int
    var values: [Double]

    init(rows: Int, columns: Int) {
        self.rows = rows
        self.columns = columns
        values = [Double](repeating: 0, count: rows * columns)
    }

    init(rows: Int, columns: Int, values: [Double]) {
        precondition(values.count == rows * columns, "\(values.count) values for \(rows) x \(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    subscript(row: Int, column: Int) -> Double {
        get { values[column * rows + row] }
        set { values[column * rows + row] = newValue }
    }

    var transposed: ColumnMatrix {
        var result = ColumnMatrix(rows: columns, columns: rows)
        for c in 0..<columns { for r in 0..<rows { result.values[r * columns + c] = values[c * rows + r] } }
        return result
    }

    /// `self * other`.
    func multiplied(by other: ColumnMatrix) -> ColumnMatrix {
        precondition(columns == other.rows, "\(rows)x\(columns) times \(other.rows)x\(other.columns)")
        var result = ColumnMatrix(rows: rows, columns: other.columns)
        values.withUnsafeBufferPointer { a in
            result.values.withUnsafeMutableBufferPointer { out in
                for j in 0..<other.columns {
                    let target = out.baseAddress! + j * rows
                    for k in 0..<columns {
                        let factor = other.values[j * other.rows + k]
                        if factor == 0 { continue }
                        let source = a.baseAddress! + k * rows
                        for i in 0..<rows { target[i] += source[i] * factor }
                    }
                }
            }
        }
        return result
    }

    /// The first `count` columns.
    func leadingColumns(_ count: Int) -> ColumnMatrix {
        ColumnMatrix(rows: rows, columns: count, values: Array(values[0..<rows * count]))
    }
}

/// Dense linear algebra in double precision on small matrices (a few
/// hundred columns at most, any number of rows): what the SVD merge of LoRA
/// adapters needs, written with the toolchain only.
enum SmallLinearAlgebra {
    /// Thin QR factorisation by Householder reflections: `a = q * r`, `q`
    /// `rows x p` with orthonormal columns, `r` `p x columns` upper
    /// triangular, `p = min(rows, columns)`. Rank-deficient input is fine:
    /// `q` stays orthonormal and `r` has (near) zero rows.
    static func qr(_ a: ColumnMatrix) -> (q: ColumnMatrix, r: ColumnMatrix) {
        let factorisation = HouseholderQR(a)
        return (factorisation.q, factorisation.r)
    }

    /// `sum_i x[i] * y[i]` in four-lane partial sums (a fixed order).
    @inline(__always)
    static func dot(_ x: UnsafePointer<Double>, _ y: UnsafePointer<Double>, count: Int) -> Double {
        var low = SIMD4<Double>(), high = SIMD4<Double>()
        var i = 0
        while i + 8 <= count {
            low += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Double>.self) * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD4<Double>.self)
            high += UnsafeRawPointer(x + i + 4).loadUnaligned(as: SIMD4<Double>.self) * UnsafeRawPointer(y + i + 4).loadUnaligned(as: SIMD4<Double>.self)
            i += 8
        }
        var sum = (low + high).sum()
        while i < count {
            sum += x[i] * y[i]
            i += 1
        }
        return sum
    }

    /// `y[i] -= factor * x[i]`.
    @inline(__always)
    static func subtract(_ factor: Double, times x: UnsafePointer<Double>, from y: UnsafeMutablePointer<Double>, count: Int) {
        for i in 0..<count { y[i] -= factor * x[i] }
    }

    /// The reflection `y -= 2 (v . y) v` of `count` columns (`stride` apart,
    /// `length` values each from `first`), each column with `dot`'s and
    /// `subtract`'s arithmetic (so the same bits as one column at a time),
    /// four columns per pass over `v`: eight independent partial sums keep
    /// the adders busy where one column's two would wait on each other.
    static func reflect(_ v: UnsafePointer<Double>, length: Int, columns first: UnsafeMutablePointer<Double>, count: Int, stride: Int) {
        typealias Lanes = SIMD4<Double>
        @inline(__always) func load(_ p: UnsafePointer<Double>) -> Lanes { UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }
        var c = 0
        while c + 4 <= count {
            let y0 = first + c * stride, y1 = y0 + stride, y2 = y1 + stride, y3 = y2 + stride
            var low0 = Lanes(), high0 = Lanes(), low1 = Lanes(), high1 = Lanes()
            var low2 = Lanes(), high2 = Lanes(), low3 = Lanes(), high3 = Lanes()
            var i = 0
            while i + 8 <= length {
                let vLow = load(v + i), vHigh = load(v + i + 4)
                low0 += vLow * load(y0 + i); high0 += vHigh * load(y0 + i + 4)
                low1 += vLow * load(y1 + i); high1 += vHigh * load(y1 + i + 4)
                low2 += vLow * load(y2 + i); high2 += vHigh * load(y2 + i + 4)
                low3 += vLow * load(y3 + i); high3 += vHigh * load(y3 + i + 4)
                i += 8
            }
            var sums = Lanes((low0 + high0).sum(), (low1 + high1).sum(), (low2 + high2).sum(), (low3 + high3).sum())
            while i < length {
                sums[0] += v[i] * y0[i]; sums[1] += v[i] * y1[i]; sums[2] += v[i] * y2[i]; sums[3] += v[i] * y3[i]
                i += 1
            }
            let factors = 2 * sums
            if factors[0] != 0 && factors[1] != 0 && factors[2] != 0 && factors[3] != 0 {
                let f0 = factors[0], f1 = factors[1], f2 = factors[2], f3 = factors[3]
                for i in 0..<length {
                    let x = v[i]
                    y0[i] -= f0 * x; y1[i] -= f1 * x; y2[i] -= f2 * x; y3[i] -= f3 * x
                }
            } else {
                for k in 0..<4 where factors[k] != 0 { subtract(factors[k], times: v, from: y0 + k * stride, count: length) }
            }
            c += 4
        }
        while c < count {
            let y = first + c * stride
            let factor = 2 * dot(v, y, count: length)
            if factor != 0 { subtract(factor, times: v, from: y, count: length) }
            c += 1
        }
    }

    /// Singular value decomposition by one-sided Jacobi rotations
    /// (Hestenes): `a = u * diag(s) * v^T` with `p = min(rows, columns)`
    /// singular values in descending order, `u` `rows x p`, `v` `columns x p`.
    /// Accurate to a few units of double rounding relative to each singular
    /// value; a zero singular value gets a zero column in `u`.
    static func svd(_ a: ColumnMatrix) -> (u: ColumnMatrix, s: [Double], v: ColumnMatrix) {
        if a.rows < a.columns {
            let (u, s, v) = svd(a.transposed)
            return (v, s, u)
        }
        let m = a.rows, n = a.columns
        var work = a
        var v = ColumnMatrix(rows: n, columns: n)
        for j in 0..<n { v[j, j] = 1 }
        work.values.withUnsafeMutableBufferPointer { a in
            v.values.withUnsafeMutableBufferPointer { v in
                for _ in 0..<100 {
                    var rotated = false
                    for i in 0..<max(0, n - 1) {
                        for j in (i + 1)..<n where rotate(a.baseAddress!, v.baseAddress!, i, j, rows: m, columns: n) { rotated = true }
                    }
                    if !rotated { break }
                }
            }
        }
        // Column norms are the singular values; sort them in descending order.
        let norms = work.values.withUnsafeBufferPointer { a in
            (0..<n).map { dot(a.baseAddress! + $0 * m, a.baseAddress! + $0 * m, count: m).squareRoot() }
        }
        let order = (0..<n).sorted { norms[$0] > norms[$1] || (norms[$0] == norms[$1] && $0 < $1) }
        var u = ColumnMatrix(rows: m, columns: n), sortedV = ColumnMatrix(rows: n, columns: n)
        for (position, column) in order.enumerated() {
            let norm = norms[column]
            for i in 0..<m { u[i, position] = norm > 0 ? work[i, column] / norm : 0 }
            for i in 0..<n { sortedV[i, position] = v[i, column] }
        }
        return (u, order.map { norms[$0] }, sortedV)
    }

    /// One Jacobi rotation making columns `i` and `j` of `a` (`rows` long)
    /// orthogonal, and the same rotation of `v`'s (`columns` long); false
    /// when they already are, to double precision.
    private static func rotate(_ a: UnsafeMutablePointer<Double>, _ v: UnsafeMutablePointer<Double>, _ i: Int, _ j: Int,
                               rows m: Int, columns n: Int) -> Bool {
        let x = a + i * m, y = a + j * m
        let alpha = dot(x, x, count: m), beta = dot(y, y, count: m), gamma = dot(x, y, count: m)
        guard gamma != 0, abs(gamma) > 1e-15 * (alpha * beta).squareRoot() else { return false }
        let zeta = (beta - alpha) / (2 * gamma)
        let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
        let c = 1 / (1 + t * t).squareRoot(), s = c * t
        rotatePair(x, y, count: m, c: c, s: s)
        rotatePair(v + i * n, v + j * n, count: n, c: c, s: s)
        return true
    }

    /// `(x, y) = (c x - s y, s x + c y)`.
    @inline(__always)
    private static func rotatePair(_ x: UnsafeMutablePointer<Double>, _ y: UnsafeMutablePointer<Double>, count: Int, c: Double, s: Double) {
        for k in 0..<count {
            let p = x[k], q = y[k]
            x[k] = c * p - s * q
            y[k] = s * p + c * q
        }
    }
}

/// A Householder QR factorisation kept as its reflectors, so that `Q x` can
/// be had for a few columns without forming `Q` (`rows x p` doubles).
struct HouseholderQR {
    let rows: Int
    let columns: Int
    /// `v_j` in column `j` (rows `j..<rows`, unit length; zero for a zero column).
    private var reflectors: ColumnMatrix
    let r: ColumnMatrix

    init(_ a: ColumnMatrix) {
        let m = a.rows, n = a.columns, p = min(m, n)
        rows = m
        columns = n
        var work = a
        var reflectors = ColumnMatrix(rows: m, columns: p)
        var r = ColumnMatrix(rows: p, columns: n)
        work.values.withUnsafeMutableBufferPointer { w in
            reflectors.values.withUnsafeMutableBufferPointer { v in
                for j in 0..<p {
                    let column = w.baseAddress! + j * m + j, vector = v.baseAddress! + j * m + j, length = m - j
                    let norm = SmallLinearAlgebra.dot(column, column, count: length).squareRoot()
                    let alpha = column[0] > 0 ? -norm : norm
                    // v = x - alpha e_1, normalised; a zero column needs no reflection.
                    vector.update(from: column, count: length)
                    vector[0] -= alpha
                    let vNorm = SmallLinearAlgebra.dot(vector, vector, count: length).squareRoot()
                    guard vNorm > 0 else { continue }
                    for i in 0..<length { vector[i] /= vNorm }
                    SmallLinearAlgebra.reflect(vector, length: length, columns: w.baseAddress! + j * m + j, count: n - j, stride: m)
                }
            }
        }
        for j in 0..<p { for c in j..<n { r[j, c] = work[j, c] } }
        self.reflectors = reflectors
        self.r = r
    }

    /// `Q [x; 0]` for `x` of `p` rows: `rows x x.columns`.
    func q(times x: ColumnMatrix) -> ColumnMatrix {
        let m = rows, p = reflectors.columns
        precondition(x.rows == p, "Q times a matrix of \(x.rows) rows, \(p) expected")
        var result = ColumnMatrix(rows: m, columns: x.columns)
        for c in 0..<x.columns { for i in 0..<p { result[i, c] = x[i, c] } }
        reflectors.values.withUnsafeBufferPointer { v in
            result.values.withUnsafeMutableBufferPointer { out in
                for j in stride(from: p - 1, through: 0, by: -1) {
                    let vector = v.baseAddress! + j * m + j
                    SmallLinearAlgebra.reflect(vector, length: m - j, columns: out.baseAddress! + j, count: x.columns, stride: m)
                }
            }
        }
        return result
    }

    /// `Q` itself, `rows x p`.
    var q: ColumnMatrix {
        let p = reflectors.columns
        var identity = ColumnMatrix(rows: p, columns: p)
        for i in 0..<p { identity[i, i] = 1 }
        return q(times: identity)
    }
}
