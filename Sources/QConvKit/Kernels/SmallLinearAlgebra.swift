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
        let m = a.rows, n = a.columns, p = min(m, n)
        var work = a
        var reflectors = ColumnMatrix(rows: m, columns: p)
        var r = ColumnMatrix(rows: p, columns: n)
        for j in 0..<p {
            var norm = 0.0
            for i in j..<m { norm += work[i, j] * work[i, j] }
            norm = norm.squareRoot()
            let alpha = work[j, j] > 0 ? -norm : norm
            // v = x - alpha e_1, normalised; a zero column needs no reflection.
            var vNorm = 0.0
            for i in j..<m {
                let v = work[i, j] - (i == j ? alpha : 0)
                reflectors[i, j] = v
                vNorm += v * v
            }
            vNorm = vNorm.squareRoot()
            if vNorm > 0 {
                for i in j..<m { reflectors[i, j] /= vNorm }
                applyReflector(reflectors, j, to: &work, columns: j..<n)
            }
            for c in j..<n { r[j, c] = work[j, c] }
            r[j, j] = vNorm > 0 ? alpha : work[j, j]
        }
        var q = ColumnMatrix(rows: m, columns: p)
        for j in 0..<p { q[j, j] = 1 }
        for j in stride(from: p - 1, through: 0, by: -1) { applyReflector(reflectors, j, to: &q, columns: 0..<p) }
        return (q, r)
    }

    /// `x -= 2 v (v . x)` for the given columns `x` of `matrix`, `v` being
    /// column `j` of `reflectors` (zero above row `j`).
    private static func applyReflector(_ reflectors: ColumnMatrix, _ j: Int, to matrix: inout ColumnMatrix, columns: Range<Int>) {
        let m = matrix.rows
        reflectors.values.withUnsafeBufferPointer { v in
            matrix.values.withUnsafeMutableBufferPointer { x in
                let vector = v.baseAddress! + j * m
                for c in columns {
                    let column = x.baseAddress! + c * m
                    var dot = 0.0
                    for i in j..<m { dot += vector[i] * column[i] }
                    let factor = 2 * dot
                    if factor == 0 { continue }
                    for i in j..<m { column[i] -= factor * vector[i] }
                }
            }
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
        for _ in 0..<100 {
            var rotated = false
            for i in 0..<max(0, n - 1) {
                for j in (i + 1)..<n where rotate(&work, &v, i, j, rows: m) { rotated = true }
            }
            if !rotated { break }
        }
        // Column norms are the singular values; sort them in descending order.
        let norms = (0..<n).map { column in (0..<m).reduce(0.0) { $0 + work[$1, column] * work[$1, column] }.squareRoot() }
        let order = (0..<n).sorted { norms[$0] > norms[$1] || (norms[$0] == norms[$1] && $0 < $1) }
        var u = ColumnMatrix(rows: m, columns: n), sortedV = ColumnMatrix(rows: n, columns: n)
        for (position, column) in order.enumerated() {
            let norm = norms[column]
            for i in 0..<m { u[i, position] = norm > 0 ? work[i, column] / norm : 0 }
            for i in 0..<n { sortedV[i, position] = v[i, column] }
        }
        return (u, order.map { norms[$0] }, sortedV)
    }

    /// One Jacobi rotation making columns `i` and `j` of `a` orthogonal (and
    /// the same rotation of `v`'s); false when they already are, to double precision.
    private static func rotate(_ a: inout ColumnMatrix, _ v: inout ColumnMatrix, _ i: Int, _ j: Int, rows m: Int) -> Bool {
        var alpha = 0.0, beta = 0.0, gamma = 0.0
        for k in 0..<m {
            let x = a[k, i], y = a[k, j]
            alpha += x * x
            beta += y * y
            gamma += x * y
        }
        guard gamma != 0, abs(gamma) > 1e-15 * (alpha * beta).squareRoot() else { return false }
        let zeta = (beta - alpha) / (2 * gamma)
        let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
        let c = 1 / (1 + t * t).squareRoot(), s = c * t
        for k in 0..<m {
            let x = a[k, i], y = a[k, j]
            a[k, i] = c * x - s * y
            a[k, j] = s * x + c * y
        }
        for k in 0..<v.rows {
            let x = v[k, i], y = v[k, j]
            v[k, i] = c * x - s * y
            v[k, j] = s * x + c * y
        }
        return true
    }
}
