/// Row-wise int8 with outlier columns kept in FP16: bitsandbytes'
/// `int8_vectorwise_quant` on the values rounded to float16, with the outlier
/// columns chosen by an `OutlierCriterion` over the whole tensor.
///
/// Pass 1 scans every row for the outlier columns, which are known only at
/// the end; meanwhile it quantizes and writes the rows as if there were none,
/// which is the final result for the many tensors where the rule selects no
/// column. Otherwise pass 2 writes the codes part again with the outlier
/// columns. Either way a NaN or infinity is found in the first pass over a
/// row: it makes the row's scale non-finite. With `.none` there is no scan:
/// one pass.
public struct Int8Encoder: TensorEncoder {
    public let outliers: OutlierCriterion

    public init(outliers: OutlierCriterion) {
        self.outliers = outliers
    }

    public func plannedScheme(for tensor: TensorInfo) -> TensorScheme {
        .int8(Int8Parameters(outlierRule: outliers, outlierColumnCount: 0, outlierThreshold: nil))
    }

    /// Known up front only without outliers (plain int8 of every row).
    public func finalScheme(for values: () throws -> FloatTensorSource, as tensor: TensorInfo, context: EncodingContext) throws -> TensorScheme? {
        outliers == .none ? plannedScheme(for: tensor) : nil
    }

    public var bufferSize: ChunkBuffers.Size {
        ChunkBuffers.Size(floats: ChunkPlan.defaultTileElements, bytes: ChunkPlan.defaultChunkElements, scratch: ChunkPlan.defaultTileElements * 8)
    }

    public func encode(_ values: FloatTensorSource, as tensor: TensorInfo, from file: String, into sink: PartSink,
                       context: EncodingContext) throws -> TensorScheme {
        let job = Int8EncodingJob(values: values, tensor: tensor, file: file, sink: sink, context: context, bufferSize: bufferSize)
        // The codes part is the same whatever the outlier columns.
        let codesLayout = plannedScheme(for: tensor).parts(for: tensor)[0]
        let codes = try sink.reserve(codesLayout)
        var selection = OutlierSelection.none
        if outliers != .none {
            selection = try job.scanPass(writingInto: codes).selection(outliers)
            if selection != .none { sink.restartReserved() }
        }
        if outliers == .none || selection != .none {
            try job.quantizePass(selection, writingInto: codes)
        }
        try sink.endReserved()
        let k = selection.columns.count
        let scheme = TensorScheme.int8(Int8Parameters(outlierRule: outliers, outlierColumnCount: k,
                                                      outlierThreshold: k > 0 ? Double(selection.threshold) : nil))
        let parts = scheme.parts(for: tensor)
        try sink.write(parts[1], bytes: UnsafeRawBufferPointer(job.rowScales))
        try sink.write(parts[2], array: selection.columns.map { Int32($0).littleEndian })
        try sink.write(parts[3], bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(job.outlierValues)[0..<Int(parts[3].byteCount)]))
        return scheme
    }
}

/// The state of one tensor's int8 encoding: its plan, buffers, row scales and
/// outlier values (at stable addresses, filled by every worker at once).
private final class Int8EncodingJob {
    let values: FloatTensorSource
    let tensor: TensorInfo
    let file: String
    let sink: PartSink
    let context: EncodingContext
    let rows: Int
    let columns: Int
    /// Chunks and tiles of whole rows, in a number the source can start reading at.
    let plan: ChunkPlan
    let buffers: ChunkBuffers
    let rowScales: UnsafeMutableBufferPointer<Float>
    /// FP16 bits, `rows × k`; allocated by the quantizing pass once k is known.
    private(set) var outlierValues: UnsafeMutableBufferPointer<UInt16>
    /// Per slot: the chunk-relative index of a value that must be refused.
    private let firstBad: SlotValues<Int?>

    init(values: FloatTensorSource, tensor: TensorInfo, file: String, sink: PartSink, context: EncodingContext, bufferSize: ChunkBuffers.Size) {
        self.values = values
        self.tensor = tensor
        self.file = file
        self.sink = sink
        self.context = context
        (rows, columns) = tensor.matrixShape
        plan = ChunkPlan(rowsOf: columns, elementCount: tensor.elementCount, alignment: values.alignment)
        buffers = context.buffers(bufferSize).fitting(ChunkBuffers.Size(floats: plan.tile, bytes: plan.chunk, scratch: values.scratchBytes(for: plan.tile)))
        rowScales = .allocate(capacity: max(rows, 1))
        rowScales.initialize(repeating: 0)
        outlierValues = .allocate(capacity: 1)
        outlierValues.initialize(repeating: 0)
        firstBad = SlotValues(slots: buffers.slots, initial: nil)
    }

    deinit {
        rowScales.deallocate()
        outlierValues.deallocate()
    }

    func rowRange(_ elements: Range<Int>) -> Range<Int> { elements.lowerBound / max(columns, 1)..<elements.upperBound / max(columns, 1) }

    /// Reads the rows of `tile` as bitsandbytes sees them, float16 values, to
    /// the start of the slot's float buffer, which stays in the core's cache
    /// from tile to tile.
    func readTile(_ tile: Range<Int>, slot: Int) throws -> UnsafeBufferPointer<Float> {
        let floats = buffers.floats(slot).baseAddress!
        try values.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
        if tensor.dtype != .f16 { FloatConversion.roundTrip(floats, count: tile.count, through: .f16) }
        return UnsafeBufferPointer(start: floats, count: tile.count)
    }

    /// The tile's place in the slot's codes, for a chunk starting at element `chunkStart`.
    func tileCodes(_ tile: Range<Int>, chunkStart: Int, slot: Int) -> UnsafeMutableBufferPointer<Int8> {
        UnsafeMutableBufferPointer(start: buffers.bytes(slot).baseAddress!.assumingMemoryBound(to: Int8.self) + (tile.lowerBound - chunkStart),
                                   count: tile.count)
    }

    /// The chunk's codes, as the slot holds them.
    func chunkCodes(_ c: Int, slot: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<plan.chunkRange(c).count])
    }

    /// The chunk-relative index of a NaN or infinity among the tile's values
    /// quantized without outlier columns, when it must be refused: then no
    /// element is left out of a row's absmax, so it shows in the row's scale.
    func refusedNonFinite(_ tile: Range<Int>, values: UnsafeBufferPointer<Float>, chunkStart: Int) -> Int? {
        guard !context.allowNonfinite, !FiniteChecks.allFinite(UnsafeBufferPointer(rebasing: UnsafeBufferPointer(rowScales)[rowRange(tile)])) else { return nil }
        return FiniteChecks.firstNonFinite(values).map { tile.lowerBound - chunkStart + $0 }
    }

    /// Hashes a written chunk's codes in order, or throws for its refused value.
    func consume(_ c: Int, slot: Int) throws {
        if let bad = firstBad[slot] { throw try nonFiniteError(chunk: plan.chunkRange(c), bad: bad, slot: slot) }
        if sink.needsBytesInOrder { sink.hashInOrder(chunkCodes(c, slot: slot)) }
    }

    /// Pass 1: the outlier scan of every row, quantizing and writing the rows
    /// as if no column were an outlier. Returns the whole tensor's scan.
    func scanPass(writingInto codes: OutputRegion) throws -> OutlierScan {
        var total = OutlierScan(columns: columns)
        let scans = SlotValues(slots: buffers.slots, initial: OutlierScan(columns: columns))
        try computeChunksInOrder(count: plan.chunkCount, slots: buffers.slots, threads: context.threads, compute: { c, slot in
            let range = plan.chunkRange(c)
            scans[slot] = OutlierScan(columns: columns)
            firstBad[slot] = nil
            for tile in plan.tiles(of: range) {
                let values = try readTile(tile, slot: slot)
                Int8Vectorwise.quantizeScanning(rows: values, rowCount: tile.count / columns, columns: columns, scan: &scans[slot],
                                                codes: tileCodes(tile, chunkStart: range.lowerBound, slot: slot),
                                                rowScales: UnsafeMutableBufferPointer(rebasing: rowScales[rowRange(tile)]))
                if firstBad[slot] == nil { firstBad[slot] = refusedNonFinite(tile, values: values, chunkStart: range.lowerBound) }
            }
            if firstBad[slot] == nil { try codes.write(chunkCodes(c, slot: slot), at: range.lowerBound) }
        }, inOrder: { c, slot in
            total.merge(scans[slot])
            try consume(c, slot: slot)
        })
        return total
    }

    /// Pass 2 (or the only pass without an outlier rule): quantizes every row
    /// with the tensor's outlier columns.
    func quantizePass(_ selection: OutlierSelection, writingInto codes: OutputRegion) throws {
        let k = selection.columns.count
        outlierValues.deallocate()
        // One spare element, so that buffer pointers into it always have a base address.
        outlierValues = .allocate(capacity: rows * k + 1)
        outlierValues.initialize(repeating: 0)
        try computeChunksInOrder(count: plan.chunkCount, slots: buffers.slots, threads: context.threads, compute: { c, slot in
            let range = plan.chunkRange(c)
            firstBad[slot] = nil
            for tile in plan.tiles(of: range) {
                let values = try readTile(tile, slot: slot)
                let rows = rowRange(tile)
                Int8Vectorwise.quantize(rows: values, rowCount: rows.count, columns: columns, selection: selection,
                                        codes: tileCodes(tile, chunkStart: range.lowerBound, slot: slot),
                                        rowScales: UnsafeMutableBufferPointer(rebasing: rowScales[rows]),
                                        outlierValues: UnsafeMutableBufferPointer(rebasing: outlierValues[rows.lowerBound * k..<rows.upperBound * k]))
                if selection == .none, let bad = refusedNonFinite(tile, values: values, chunkStart: range.lowerBound) {
                    firstBad[slot] = bad
                    return
                }
            }
            try codes.write(chunkCodes(c, slot: slot), at: range.lowerBound)
        }, inOrder: { c, slot in
            try consume(c, slot: slot)
        })
    }

    /// The error for element `bad` of `chunk` (chunk-relative), found
    /// non-finite after rounding to float16: its tile is read again without
    /// the rounding, and a finite source value is reported as overflowing
    /// float16 rather than as the infinity it became.
    func nonFiniteError(chunk: Range<Int>, bad: Int, slot: Int) throws -> ConversionError {
        let index = chunk.lowerBound + bad
        let tile = plan.tiles(of: chunk).first { $0.contains(index) }!
        let floats = buffers.floats(slot).baseAddress!
        try values.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
        let value = floats[index - tile.lowerBound]
        return NonFiniteValue(index: index, value: value, overflowsFloat16: tensor.dtype != .f16 && value.isFinite).error(file: file, tensor: tensor.name)
    }
}
