/// How LLM.int8 outlier columns are chosen for a weight matrix.
///
/// Every criterion resolves, per tensor, to one element threshold `T`:
/// an element with `|a| >= T` is an outlier and its column is an outlier
/// column, exactly as bitsandbytes' `int8_vectorwise_quant(A, threshold: T)`
/// decides. So a tensor converted with any criterion is what bitsandbytes
/// would produce with the resolved threshold (recorded in `OutlierSelection`).
public enum OutlierCriterion: Equatable, Sendable, CustomStringConvertible {
    /// No outliers: plain row-wise int8 (bitsandbytes' threshold 0).
    case none
    /// bitsandbytes' rule: `|a| >= threshold` anywhere in a column marks it.
    /// A threshold that is not positive selects nothing, as in bitsandbytes.
    case absolute(Float)
    /// `|a| >= factor * RMS(tensor)`: a threshold that scales with the weights,
    /// since a fixed 6.0 (made for activations) never fires on weights.
    case relativeToRMS(Float)

    /// `relativeToRMS(10)`, chosen on all-MiniLM-L6-v2 (docs/INT8_OUTLIERS.md):
    /// it splits off about 1% of the columns and cuts the relative RMSE of the
    /// converted weights by about 15% (the worst tensor's by 42%).
    public static let `default`: OutlierCriterion = .relativeToRMS(10)

    /// The element threshold for a tensor whose RMS is `rms`, rounded to
    /// float16 as torch does when it compares a half tensor with a Python
    /// float (so `absolute(0.06)` also marks the half 0.05999756). Nil when the
    /// criterion selects nothing: `none`, a threshold that is NaN or rounds
    /// to 0 or below, or an all-zero tensor under a relative rule.
    public func threshold(rms: Double) -> Float? {
        let value: Float
        switch self {
        case .none: return nil
        case .absolute(let threshold): value = threshold
        case .relativeToRMS(let factor): value = Float(Double(factor) * rms)
        }
        let rounded = FloatConversion.float(fromHalf: FloatConversion.halfBits(from: value))
        return rounded > 0 ? rounded : nil
    }

    /// `none`, `abs:6`, `rms:10`; what `init?(argument:)` reads back.
    public var description: String {
        switch self {
        case .none: return "none"
        case .absolute(let threshold): return "abs:\(threshold)"
        case .relativeToRMS(let factor): return "rms:\(factor)"
        }
    }

    /// Parses `none`, `abs:T` or `rms:K` (T, K positive finite numbers);
    /// nil for anything else.
    public init?(argument: String) {
        if argument == "none" { self = .none; return }
        let parts = argument.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let value = Float(parts[1]), value.isFinite, value > 0 else { return nil }
        switch parts[0] {
        case "abs": self = .absolute(value)
        case "rms": self = .relativeToRMS(value)
        default: return nil
        }
    }
}

/// The outliers of one tensor: the resolved element threshold and the
/// outlier columns, ascending. The kernel relies on the invariant that
/// `columns` is exactly the set of columns holding an element `|a| >= threshold`,
/// which `OutlierScan.selection(_:)` guarantees.
public struct OutlierSelection: Equatable, Sendable {
    /// Elements with `|a| >= threshold` are excluded from their row's absmax.
    /// Meaningless (and ignored) when `columns` is empty.
    public var threshold: Float
    /// Outlier columns, ascending, without duplicates.
    public var columns: [Int]

    public init(threshold: Float, columns: [Int]) {
        self.threshold = threshold
        self.columns = columns
    }

    /// Plain int8, no outlier columns.
    public static let none = OutlierSelection(threshold: .infinity, columns: [])
}

/// Pass 1 of an LLM.int8 conversion: column statistics gathered over row
/// chunks, before any row is quantized (an outlier column is known only once
/// every row has been seen).
///
/// Feed chunks of whole rows with `add(_:)`. For parallel scans give each
/// chunk its own scan and `merge` them; column maxima are exact in any order,
/// the Double sum of squares may differ in its last bits with the grouping, so
/// merge in row order over chunk boundaries that do not depend on the thread
/// count when bit-identical thresholds across runs matter.
public struct OutlierScan: Equatable, Sendable {
    /// Row length of the matrix.
    public let columnCount: Int
    /// Bit patterns of each column's largest `|a|`, NaN ignored. Non-negative
    /// floats order like their bit patterns (non-negative Int32s), so integer
    /// SIMD max does the work.
    private var columnAbsMaxBits: [Int32]
    /// Sum of squares of the finite elements (for the RMS).
    public private(set) var sumOfSquares: Double = 0
    /// Number of finite elements seen.
    public private(set) var finiteCount: Int = 0
    /// Number of rows seen.
    public private(set) var rowCount: Int = 0

    public init(columns: Int) {
        precondition(columns >= 0, "negative column count")
        columnCount = columns
        columnAbsMaxBits = [Int32](repeating: 0, count: columns)
    }

    /// Largest `|a|` of each column (NaN ignored, infinity counted).
    public var columnAbsMax: [Float] { columnAbsMaxBits.map { Float(bitPattern: UInt32($0)) } }

    /// Root mean square of the finite elements; 0 before any.
    public var rms: Double { finiteCount == 0 ? 0 : (sumOfSquares / Double(finiteCount)).squareRoot() }

    /// Adds whole rows: `rows.count` must be a multiple of `columnCount`.
    public mutating func add(_ rows: UnsafeBufferPointer<Float>) {
        guard columnCount > 0, let base = rows.baseAddress else { return }
        precondition(rows.count % columnCount == 0, "OutlierScan.add: \(rows.count) values are not whole rows of \(columnCount)")
        let count = rows.count / columnCount
        let lanes = SIMD8<Float>.scalarCount
        let infinityBits = SIMD8<Int32>(repeating: Int32(Float.infinity.bitPattern))
        var sum = 0.0
        var nonFinite = 0
        columnAbsMaxBits.withUnsafeMutableBufferPointer { maxima in
            let maxBase = UnsafeMutableRawPointer(maxima.baseAddress!)
            for row in 0..<count {
                let source = UnsafeRawPointer(base + row * columnCount)
                var squares = SIMD8<Double>()
                var nonFiniteLanes = SIMD8<Int32>()
                var column = 0
                while column < columnCount {
                    // Padding lanes load as 0: finite, no square, no new maximum.
                    let width = min(lanes, columnCount - column)
                    let values = Int8Vectorwise.loadPadded(source, from: column, width: width, as: Float.self)
                    var magnitude = Int8Vectorwise.magnitudeBits(values)
                    let isNonFinite = magnitude .>= infinityBits
                    magnitude.replace(with: 0, where: magnitude .> infinityBits)  // NaN
                    let running = Int8Vectorwise.loadPadded(UnsafeRawPointer(maxBase), from: column, width: width, as: Int32.self)
                    Int8Vectorwise.storePrefix(Int8Vectorwise.larger(running, magnitude), into: maxBase, at: column, width: width)
                    let kept = Int8Vectorwise.widen(values.replacing(with: 0, where: isNonFinite))
                    squares += kept * kept
                    nonFiniteLanes &+= SIMD8<Int32>().replacing(with: 1, where: isNonFinite)
                    column += width
                }
                sum += squares.sum()
                nonFinite += Int(nonFiniteLanes.wrappedSum())
            }
        }
        sumOfSquares += sum
        finiteCount += rows.count - nonFinite
        rowCount += count
    }

    /// Folds in the statistics of other rows of the same matrix.
    public mutating func merge(_ other: OutlierScan) {
        precondition(other.columnCount == columnCount, "OutlierScan.merge: \(other.columnCount) columns, expected \(columnCount)")
        for column in 0..<columnCount {
            columnAbsMaxBits[column] = max(columnAbsMaxBits[column], other.columnAbsMaxBits[column])
        }
        sumOfSquares += other.sumOfSquares
        finiteCount += other.finiteCount
        rowCount += other.rowCount
    }

    /// The outlier columns `criterion` picks from the rows seen so far.
    public func selection(_ criterion: OutlierCriterion) -> OutlierSelection {
        guard let threshold = criterion.threshold(rms: rms) else { return .none }
        let columns = columnAbsMaxBits.indices.filter { Float(bitPattern: UInt32(columnAbsMaxBits[$0])) >= threshold }
        return columns.isEmpty ? .none : OutlierSelection(threshold: threshold, columns: columns)
    }
}
