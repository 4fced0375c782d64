/// A base tensor with a LoRA change applied, read range by range as float32
/// like any other tensor: the merge plugs into the same pipelines as
/// `dequant` (write safetensors) and `to-nf4` (quantize into a container).
///
/// Ranges are whole groups of `LoRAPreparedChange.rowsPerKernelCall` rows (and whole 4-bit blocks or int8 rows of the base).
/// Nothing of the tensor is kept in memory between reads:
/// - a replacement the prepared change did not decode (`holdsReplacement`
///   false) is read from the adapter range by range, like the base;
/// - DoRA whose norms run across rows (fan_in_fan_out, embeddings) streams
///   the tensor once more when the source is made, to sum each column's
///   squares; each read then merges its rows and applies the column factors.
///   The base is read twice; memory is a few chunk buffers per thread.
public final class MergedTensorSource: FloatTensorSource {
    public let prepared: LoRAPreparedChange
    /// Where the values the change starts from are read: the base tensor, or
    /// the adapter's replacement tensor; nil when the prepared change holds
    /// the replacement.
    private let source: FloatTensorSource?
    /// The source is the replacement, to be rounded to the output dtype as it is read.
    private let roundsSource: Bool
    /// DoRA across rows: m / ||V column||.
    private var columnFactors: [Float]?


    /// - Parameters:
    ///   - base: the tensor's stored values (a safetensors tensor or a
    ///     container decoder), of the change's base shape.
    public init(base: FloatTensorSource, prepared: LoRAPreparedChange, threads: Int) throws {
        self.prepared = prepared
        if let replacement = prepared.change.replacement {
            source = prepared.holdsReplacement ? nil : replacement
            roundsSource = !prepared.holdsReplacement
        } else {
            source = base
            roundsSource = false
        }
        if prepared.requiresWholeTensor { columnFactors = try sumColumnSquares(threads: threads) }
    }

    public var info: TensorInfo { prepared.change.output }

    /// Whole groups of rows that the merge's kernel takes at once (four rows
    /// share each load of the basis), so that a read of a long row, such as a
    /// tile of `down_proj`, does not fall back to one row at a time.
    public var alignment: Int {
        let rows = max(1, prepared.columnCount) * LoRAPreparedChange.rowsPerKernelCall
        return leastCommonMultiple(rows, source?.alignment ?? 1)
    }

    public func scratchBytes(for count: Int) -> Int { source?.scratchBytes(for: count) ?? 0 }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        guard !range.isEmpty else { return }
        let columns = prepared.columnCount
        precondition(columns > 0 && range.lowerBound % columns == 0, "merge ranges must be whole rows")
        try readStart(range, into: destination, scratch: scratch)
        merge(destination, range: range)
    }

    /// `readFloats`' work on the base's values of `range` (whole rows), read
    /// elsewhere: the change applied in place. Not for a change that starts
    /// from a replacement it streams from the adapter.
    func applyChange(to destination: UnsafeMutablePointer<Float>, range: Range<Int>) {
        precondition(prepared.change.replacement == nil || prepared.holdsReplacement, "a replacement's values are read from the adapter")
        merge(destination, range: range)
    }

    /// The change applied to the values it starts from (`readStart`'s).
    private func merge(_ destination: UnsafeMutablePointer<Float>, range: Range<Int>) {
        let columns = prepared.columnCount
        let rows = range.lowerBound / columns..<(range.upperBound + columns - 1) / columns
        if let columnFactors, !columnFactors.isEmpty {
            columnFactors.withUnsafeBufferPointer { prepared.apply(to: destination, rows: rows, columnFactors: $0.baseAddress!) }
        } else {
            prepared.apply(to: destination, rows: rows)
        }
    }

    /// The values the change starts from, as `LoRAPreparedChange.apply` expects them.
    private func readStart(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        guard let source else { return }
        try source.readFloats(range, into: destination, scratch: scratch)
        if roundsSource { FloatConversion.roundTrip(destination, count: range.count, through: prepared.change.output.dtype) }
    }

    /// The DoRA norm pass: reads the rows in ranges of whole norm blocks on
    /// every thread, and adds each block's column sums of squares in block
    /// order, so the factors do not depend on the thread count and equal
    /// `applyToWholeTensor`'s.
    private func sumColumnSquares(threads: Int) throws -> [Float] {
        let rows = prepared.rowCount, columns = prepared.columnCount
        guard rows > 0 && columns > 0 else { return [] }
        let blockRows = prepared.normBlockRows
        let sourceAlignment = max(1, source?.alignment ?? 1)
        // Reads start where the source can start reading and hold whole blocks.
        let unitRows = leastCommonMultiple(blockRows, sourceAlignment / greatestCommonDivisor(sourceAlignment, columns))
        let plan = ChunkPlan(elementCount: rows * columns, unit: unitRows * columns)
        let readRows = plan.chunk / columns
        let blocksPerRead = readRows / blockRows
        func rowRange(_ c: Int) -> Range<Int> { plan.chunkRange(c).lowerBound / columns..<plan.chunkRange(c).upperBound / columns }
        let slots = max(1, min(plan.chunkCount, max(2, threads * 2)))
        let buffers = ChunkBuffers(slots: slots, size: ChunkBuffers.Size(floats: readRows * columns, bytes: 0, scratch: max(1, scratchBytes(for: readRows * columns))))
        let partial = UnsafeMutableBufferPointer<Double>.allocate(capacity: slots * blocksPerRead * columns)
        defer { partial.deallocate() }
        var total = [Double](repeating: 0, count: columns)
        try computeChunksInOrder(count: plan.chunkCount, slots: slots, threads: threads, compute: { c, slot in
            let range = rowRange(c)
            let values = buffers.floats(slot).baseAddress!
            try readStart(range.lowerBound * columns..<range.upperBound * columns, into: values, scratch: buffers.scratch(slot))
            let sums = partial.baseAddress! + slot * blocksPerRead * columns
            sums.initialize(repeating: 0, count: blocksPerRead * columns)
            for (b, start) in stride(from: range.lowerBound, to: range.upperBound, by: blockRows).enumerated() {
                let block = start..<min(range.upperBound, start + blockRows)
                prepared.accumulateColumnSquares(values + (start - range.lowerBound) * columns, rows: block, into: sums + b * columns)
            }
        }, inOrder: { c, slot in
            let range = rowRange(c)
            let sums = partial.baseAddress! + slot * blocksPerRead * columns
            let blocks = (range.count + blockRows - 1) / blockRows
            for b in 0..<blocks { for j in 0..<columns { total[j] += sums[b * columns + j] } }
        })
        return total.withUnsafeBufferPointer { prepared.columnFactors(squares: $0.baseAddress!) }
    }
}
