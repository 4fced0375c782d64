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
    /// floats order like their bit patterns, so an integer max does the work.
    private var columnAbsMaxBits: [UInt32]
    /// Sum of squares of the finite elements (for the RMS).
    public private(set) var sumOfSquares: Double = 0
    /// Number of finite elements seen.
    public private(set) var finiteCount: Int = 0
    /// Number of rows seen.
    public private(set) var rowCount: Int = 0

    public init(columns: Int) {
        precondition(columns >= 0, "negative column count")
        columnCount = columns
        columnAbsMaxBits = [UInt32](repeating: 0, count: columns)
    }

    /// Largest `|a|` of each column (NaN ignored, infinity counted).
    public var columnAbsMax: [Float] { columnAbsMaxBits.map { Float(bitPattern: $0) } }

    /// Root mean square of the finite elements; 0 before any.
    public var rms: Double { finiteCount == 0 ? 0 : (sumOfSquares / Double(finiteCount)).squareRoot() }

    /// Adds whole rows: `rows.count` must be a multiple of `columnCount`.
    public mutating func add(_ rows: UnsafeBufferPointer<Float>) {
        guard columnCount > 0, let base = rows.baseAddress else { return }
        precondition(rows.count % columnCount == 0, "OutlierScan.add: \(rows.count) values are not whole rows of \(columnCount)")
        for row in 0..<rows.count / columnCount { _ = addRow(base + row * columnCount) }
    }

    /// Adds one row of `columnCount` values and returns its largest `|a|`,
    /// NaN when it holds one: the row's plain int8 scale, which
    /// `Int8Vectorwise.quantizeScanning` uses without another pass.
    @inline(__always)
    mutating func addRow(_ row: UnsafePointer<Float>) -> Float {
        let count = columnCount
        let infinityBits = Float.infinity.bitPattern
        // A plain loop over the bits: LLVM vectorizes it (integer max keeps
        // NaN, the largest pattern, in the row's maximum), as it does not
        // Swift SIMD code with masks.
        var rowMaximum: UInt32 = 0
        columnAbsMaxBits.withUnsafeMutableBufferPointer { maxima in
            let maxima = maxima.baseAddress!
            for column in 0..<count {
                let magnitude = row[column].bitPattern & 0x7FFF_FFFF
                rowMaximum = max(rowMaximum, magnitude)
                maxima[column] = max(maxima[column], magnitude > infinityBits ? 0 : magnitude)
            }
        }
        rowCount += 1
        if rowMaximum < infinityBits {
            sumOfSquares += Self.sumOfSquares(row, count: count)
            finiteCount += count
        } else {
            // Rare: leave the NaNs and infinities out, one by one.
            var sum = 0.0
            for column in 0..<count where row[column].isFinite {
                sum += Double(row[column]) * Double(row[column])
                finiteCount += 1
            }
            sumOfSquares += sum
        }
        return Float(bitPattern: rowMaximum)
    }

    /// Sum of squares of finite values in Double, 16 lanes at a time: two
    /// accumulators, so that the additions do not wait on each other.
    @inline(__always)
    static func sumOfSquares(_ values: UnsafePointer<Float>, count: Int) -> Double {
        let raw = UnsafeRawPointer(values)
        var low = SIMD8<Double>(), high = SIMD8<Double>()
        var index = 0
        while index &+ 16 <= count {
            let a = SIMDLanes.widen(raw.loadUnaligned(fromByteOffset: index &* 4, as: SIMD8<Float>.self))
            let b = SIMDLanes.widen(raw.loadUnaligned(fromByteOffset: (index &+ 8) &* 4, as: SIMD8<Float>.self))
            low += a * a
            high += b * b
            index &+= 16
        }
        var tail = 0.0
        while index < count {
            tail += Double(values[index]) * Double(values[index])
            index &+= 1
        }
        return (low + high).sum() + tail
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
        let columns = columnAbsMaxBits.indices.filter { Float(bitPattern: columnAbsMaxBits[$0]) >= threshold }
        return columns.isEmpty ? .none : OutlierSelection(threshold: threshold, columns: columns)
    }
}
