/// LLM.int8 vector-wise quantization, bit-compatible with bitsandbytes'
/// `int8_vectorwise_quant` (CPU path), plus the outlier columns kept as FP16.
///
/// A tensor is a matrix of rows x columns: rank > 2 folds the leading
/// dimensions into rows, rank 1 is one row (`TensorInfo.matrixShape`).
/// Input values are float32 holding float16 values: bitsandbytes quantizes
/// `t.to(torch.float16)`, so callers round F32/BF16 sources through F16 first.
///
/// Per row: elements with `|a| >= selection.threshold` are left out of the row
/// absmax; `SCB = absmax` (float32); `CB = round-half-even(a * s)` with
/// `s = 127 * (1 / SCB)`, each step rounded to float32 as torch does it. The
/// outlier columns of CB are 0 and their original values are kept as FP16 bit
/// patterns, `[rows, k]`, columns ascending.
///
/// Rows are independent once the selection is known (pass 1, `OutlierScan`),
/// so disjoint row ranges may be quantized concurrently by separate calls.
public enum Int8Vectorwise {
    /// float32 of 1/127, the constant bitsandbytes dequantizes with.
    public static let inverse127: Float = 7.874015718698502e-3

    /// Quantizes `rowCount` rows of `columns` values each.
    ///
    /// - Parameters:
    ///   - rows: `rowCount * columns` float16-valued floats, row-major.
    ///   - selection: the whole tensor's outliers (from `OutlierScan`).
    ///   - codes: receives CB, `rowCount * columns`.
    ///   - rowScales: receives SCB, `rowCount`.
    ///   - outlierValues: receives the outlier columns' FP16 bits,
    ///     `rowCount * selection.columns.count` (may be empty when there are none).
    ///
    /// bitsandbytes zeroes the outlier columns of CB only when the tensor has
    /// more than one row, but a single row's outlier columns hold nothing but
    /// outlier elements, which it zeroes before quantizing; so CB is 0 there
    /// either way and a chunk need not know the tensor's row count.
    ///
    /// Non-finite and degenerate rows follow bitsandbytes: an absmax of 0
    /// (all-zero row), infinity or NaN gives a row of zero codes with SCB as
    /// computed (0, inf, NaN).
    public static func quantize(rows: UnsafeBufferPointer<Float>, rowCount: Int, columns: Int,
                                selection: OutlierSelection,
                                codes: UnsafeMutableBufferPointer<Int8>,
                                rowScales: UnsafeMutableBufferPointer<Float>,
                                outlierValues: UnsafeMutableBufferPointer<UInt16>) {
        let outlierCount = selection.columns.count
        precondition(rowCount >= 0 && columns >= 0 && rows.count == rowCount * columns, "Int8Vectorwise.quantize: \(rows.count) values for \(rowCount) x \(columns)")
        precondition(codes.count == rows.count && rowScales.count == rowCount && outlierValues.count == rowCount * outlierCount,
                     "Int8Vectorwise.quantize: output buffers do not match \(rowCount) x \(columns) with \(outlierCount) outlier columns")
        precondition(selection.columns.allSatisfy { $0 >= 0 && $0 < columns }, "Int8Vectorwise.quantize: outlier column out of range")
        guard rowCount > 0, columns > 0, let input = rows.baseAddress, let output = codes.baseAddress else {
            for row in 0..<rowCount { rowScales[row] = 0 }
            return
        }
        // Without outlier columns no element reaches the threshold; a NaN
        // threshold excludes nothing.
        let threshold = outlierCount == 0 ? Float.nan : selection.threshold
        for row in 0..<rowCount {
            let source = input + row * columns
            let absmax = rowAbsMax(source, count: columns, excludingFrom: threshold)
            rowScales[row] = absmax
            quantizeRow(source, count: columns, absmax: absmax, into: output + row * columns)
            for (index, column) in selection.columns.enumerated() {
                output[row * columns + column] = 0
                outlierValues[row * outlierCount + index] = FloatConversion.halfBits(from: input[row * columns + column])
            }
        }
    }

    /// Pass 1 of a conversion with an outlier rule, in one pass over the
    /// values: quantizes rows as `quantize` does with `selection: .none` (the
    /// final result when the rule picks no column) while adding them to
    /// `scan`, whose row maxima are those rows' scales.
    public static func quantizeScanning(rows: UnsafeBufferPointer<Float>, rowCount: Int, columns: Int, scan: inout OutlierScan,
                                        codes: UnsafeMutableBufferPointer<Int8>, rowScales: UnsafeMutableBufferPointer<Float>) {
        precondition(rowCount >= 0 && columns == scan.columnCount && rows.count == rowCount * columns
                     && codes.count == rows.count && rowScales.count == rowCount,
                     "Int8Vectorwise.quantizeScanning: buffers do not match \(rowCount) x \(columns)")
        guard rowCount > 0, columns > 0, let input = rows.baseAddress, let output = codes.baseAddress else {
            for row in 0..<rowCount { rowScales[row] = 0 }
            return
        }
        for row in 0..<rowCount {
            let source = input + row * columns
            let absmax = scan.addRow(source)
            rowScales[row] = absmax
            quantizeRow(source, count: columns, absmax: absmax, into: output + row * columns)
        }
    }

    /// Reconstructs float32 values: `CB * SCB * (1/127)` in float32, as
    /// bitsandbytes' `int8_vectorwise_dequant`, except the outlier columns,
    /// which come back as their FP16 values.
    public static func dequantize(codes: UnsafeBufferPointer<Int8>, rowScales: UnsafeBufferPointer<Float>,
                                  rowCount: Int, columns: Int,
                                  outlierColumns: [Int], outlierValues: UnsafeBufferPointer<UInt16>,
                                  into destination: UnsafeMutableBufferPointer<Float>) {
        let outlierCount = outlierColumns.count
        precondition(codes.count == rowCount * columns && rowScales.count == rowCount && destination.count == codes.count
                     && outlierValues.count == rowCount * outlierCount, "Int8Vectorwise.dequantize: buffers do not match \(rowCount) x \(columns)")
        precondition(outlierColumns.allSatisfy { $0 >= 0 && $0 < columns }, "Int8Vectorwise.dequantize: outlier column out of range")
        guard rowCount > 0, columns > 0, let input = codes.baseAddress, let output = destination.baseAddress else { return }
        for row in 0..<rowCount {
            let source = input + row * columns
            let target = output + row * columns
            let scale = rowScales[row]
            // Two float32 roundings, in bitsandbytes' order.
            for column in 0..<columns { target[column] = Float(source[column]) * scale * inverse127 }
            for (index, column) in outlierColumns.enumerated() {
                output[row * columns + column] = FloatConversion.float(fromHalf: outlierValues[row * outlierCount + index])
            }
        }
    }

    // MARK: - Row kernels
    //
    // Plain loops over scalars: LLVM vectorizes them, 3-5 times faster than
    // the same arithmetic written with Swift SIMD types and masks.

    /// Largest `|a|` of a row, skipping elements with `|a| >= threshold`
    /// (none when the threshold is NaN). NaN elements are never skipped and
    /// make the result NaN, as torch's max does.
    @inline(__always)
    static func rowAbsMax(_ source: UnsafePointer<Float>, count: Int, excludingFrom threshold: Float) -> Float {
        threshold.isNaN ? Magnitudes.absoluteMaximum(source, count: count)
            : Magnitudes.absoluteMaximum(source, count: count, below: threshold)
    }

    /// Writes `round-half-even(a * s)` as Int8 for a row whose scale (SCB) is `absmax`.
    @inline(__always)
    static func quantizeRow(_ source: UnsafePointer<Float>, count: Int, absmax: Float, into destination: UnsafeMutablePointer<Int8>) {
        // torch evaluates `127.0 / row_stats` as `reciprocal(row_stats) * 127`:
        // two float32 roundings, which move some products off a .5 tie.
        let scale = 127 * (1 / absmax)
        guard scale.isFinite, scale > 0 else {
            // absmax 0, inf or NaN: every product is 0 or NaN in bitsandbytes
            // (0 * inf, inf * 0, NaN), which torch's int8 cast turns into 0.
            destination.initialize(repeating: 0, count: count)
            return
        }
        for column in 0..<count {
            // The clamp keeps excluded outliers (zeroed later) and their
            // infinities in Int8; then adding 1.5 * 2^23 leaves
            // round-half-even(x) in the low mantissa bits.
            let scaled = min(max(source[column] * scale, -127), 127)
            destination[column] = Int8(truncatingIfNeeded: (scaled + 12_582_912).bitPattern)
        }
    }
}
